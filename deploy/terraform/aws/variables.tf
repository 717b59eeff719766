variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "eventops"
}

variable "environment" {
  description = "Environment name (also the Kustomize overlay's folder name)."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.environment))
    error_message = "environment: lower-case letters, digits and '-', 2 to 21 characters."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "availability_zones" {
  description = "Three zones of the region for the subnets, EKS nodes, MSK brokers and RDS."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  validation {
    condition     = length(var.availability_zones) == 3
    error_message = "availability_zones: exactly three zones (MSK's three brokers, one per zone)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "vpc_cidr" {
  description = "The VPC's address range; private subnets take the first three /19s."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, one zone's outage cuts egress) instead of one per zone."
  type        = bool
  default     = false
}

variable "kubernetes_version" {
  description = "EKS control plane version."
  type        = string
  default     = "1.33"
}

variable "cluster_endpoint_public_cidrs" {
  description = "CIDRs allowed to reach the EKS API endpoint publicly; empty keeps the endpoint private (reach it through a VPN or bastion)."
  type        = list(string)
  default     = []
}

variable "node_instance_types" {
  description = "Instance types of the general node group."
  type        = list(string)
  default     = ["m7i.xlarge"]
}

variable "node_min_size" {
  type    = number
  default = 3
}

variable "node_max_size" {
  type    = number
  default = 12
}

variable "node_desired_size" {
  type    = number
  default = 3
}

variable "kubernetes_namespaces" {
  description = "Namespaces whose EventOps service accounts may assume the IAM roles (the platform's and each project's, e.g. eventops-churn)."
  type        = list(string)
  default     = ["eventops"]
}

variable "kafka_version" {
  type    = string
  default = "3.8.x"
}

variable "kafka_instance_type" {
  type    = string
  default = "kafka.m7g.large"
}

variable "kafka_volume_size_gb" {
  type    = number
  default = 500
}

variable "db_instance_class" {
  type    = string
  default = "db.m7g.large"
}

variable "db_engine_version" {
  type    = string
  default = "17"
}

variable "db_allocated_storage_gb" {
  type    = number
  default = 100
}

variable "db_max_allocated_storage_gb" {
  type    = number
  default = 1000
}

variable "db_backup_retention_days" {
  type    = number
  default = 14
}

variable "log_retention_days" {
  description = "Retention of the VPC flow logs and the EKS, MSK and RDS logs."
  type        = number
  default     = 365
}

variable "lake_noncurrent_days" {
  description = "Days a replaced or deleted object version of the lake and artifact buckets is kept (the window to undo a mistake)."
  type        = number
  default     = 30
}
