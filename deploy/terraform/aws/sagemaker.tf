# SageMaker: `eventops deploy --target sagemaker` (from the worker or a CI job) creates models,
# endpoint configurations, endpoints and transform jobs named after the deployment, all starting
# with var.sagemaker_name_prefix; the model archives go to the artifacts bucket under sagemaker/.
# SageMaker runs them with its own execution role, which can read those archives, pull the
# platform image and write its logs, and nothing else.
locals {
  sagemaker_arn = "arn:${local.partition}:sagemaker:${var.region}:${local.account_id}"
}

data "aws_iam_policy_document" "sagemaker_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "sagemaker" {
  name               = "${local.name}-sagemaker"
  assume_role_policy = data.aws_iam_policy_document.sagemaker_assume.json
}

data "aws_iam_policy_document" "sagemaker_execution" {
  statement {
    sid       = "ReadModelArchives"
    actions   = ["s3:GetObject"]
    resources = ["${module.artifacts.arn}/sagemaker/*"]
  }
  statement {
    sid       = "TransformData"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:ListBucket"]
    resources = [module.lake.arn, "${module.lake.arn}/transform/*"]
  }
  statement {
    sid       = "PullPlatformImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.eventops.arn]
  }
  statement {
    sid     = "RegistryLogin"
    actions = ["ecr:GetAuthorizationToken"]
    # GetAuthorizationToken has no resource-level permissions: the token opens only what the
    # statement above allows.
    resources = ["*"]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/sagemaker/*"]
  }
  statement {
    sid       = "PlatformKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.platform.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "ecr.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "sagemaker_execution" {
  name   = "execution"
  role   = aws_iam_role.sagemaker.id
  policy = data.aws_iam_policy_document.sagemaker_execution.json
}

# What the worker needs to deploy: SageMaker resources under the prefix, the model archives,
# and passing the execution role above to SageMaker only.
data "aws_iam_policy_document" "sagemaker_deploy" {
  statement {
    sid = "ManageEndpoints"
    actions = [
      "sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
      "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig",
      "sagemaker:DeleteEndpointConfig", "sagemaker:ListEndpointConfigs",
      "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint",
      "sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob",
      "sagemaker:AddTags", "sagemaker:ListTags",
    ]
    resources = [
      "${local.sagemaker_arn}:model/${var.sagemaker_name_prefix}*",
      "${local.sagemaker_arn}:endpoint-config/${var.sagemaker_name_prefix}*",
      "${local.sagemaker_arn}:endpoint/${var.sagemaker_name_prefix}*",
      "${local.sagemaker_arn}:transform-job/${var.sagemaker_name_prefix}*",
    ]
  }
  statement {
    sid       = "PassExecutionRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.sagemaker.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["sagemaker.amazonaws.com"]
    }
  }
  statement {
    sid       = "WriteModelArchives"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${module.artifacts.arn}/sagemaker/*"]
  }
  statement {
    sid       = "ArchivesKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.platform.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "sagemaker_deploy" {
  name   = "sagemaker-deploy"
  role   = aws_iam_role.irsa["worker"].id
  policy = data.aws_iam_policy_document.sagemaker_deploy.json
}
