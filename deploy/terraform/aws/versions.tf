# EventOps on AWS: network, EKS, MSK, RDS PostgreSQL, S3, ECR, IAM roles for service accounts
# and Secrets Manager. Plain resources only, so every line is reviewed and scanned (checkov).
#
#   terraform init -backend-config="bucket=<state bucket>" -backend-config="key=eventops/<env>.tfstate" \
#     -backend-config="region=<region>" -backend-config="use_lockfile=true"
#   terraform apply -var-file=<env>.tfvars
terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State holds the generated Kafka and serving secrets: keep it in an encrypted, versioned
  # bucket that only the platform's administrators can read.
  backend "s3" {
    encrypt = true
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      "app.kubernetes.io/part-of" = "eventops"
      "eventops.dev/environment"  = var.environment
    })
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  name       = "${var.name}-${var.environment}"
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  azs        = var.availability_zones
}
