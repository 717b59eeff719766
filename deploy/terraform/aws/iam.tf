# IAM roles for the platform's Kubernetes service accounts (IRSA). Each role trusts one service
# account name in the namespaces of var.kubernetes_namespaces, and may touch only what that
# component needs:
#   eventops-api, -worker, -serve  the lake: list the bucket, read/write/delete under lake/
#   eventops-mlflow                the artifacts bucket under mlflow/
#   eventops-external-secrets      read the platform's four secrets
# All of them may use the platform key for those objects only (through S3 / Secrets Manager).
locals {
  oidc_issuer = replace(aws_iam_openid_connect_provider.eks.url, "https://", "")
  irsa_roles = {
    api              = "eventops-api"
    worker           = "eventops-worker"
    serve            = "eventops-serve"
    mlflow           = "eventops-mlflow"
    external-secrets = "eventops-external-secrets" # pragma: allowlist secret (an account name)
  }
  lake_roles = toset(["api", "worker", "serve"])
}

data "aws_iam_policy_document" "irsa_assume" {
  for_each = local.irsa_roles
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = [for ns in var.kubernetes_namespaces : "system:serviceaccount:${ns}:${each.value}"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each           = local.irsa_roles
  name               = "${local.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume[each.key].json
}

data "aws_iam_policy_document" "lake" {
  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [module.lake.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["lake", "lake/*"]
    }
  }
  statement {
    sid       = "ReadWriteLake"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${module.lake.arn}/lake/*"]
  }
  statement {
    sid       = "LakeKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.platform.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "artifacts" {
  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [module.artifacts.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["mlflow", "mlflow/*"]
    }
  }
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${module.artifacts.arn}/mlflow/*"]
  }
  statement {
    sid       = "ArtifactsKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.platform.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "external_secrets" {
  statement {
    sid     = "ReadPlatformSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [
      aws_db_instance.main.master_user_secret[0].secret_arn,
      aws_secretsmanager_secret.kafka.arn,
      aws_secretsmanager_secret.serving_token.arn,
      aws_secretsmanager_secret.alerts.arn,
    ]
  }
  statement {
    sid       = "SecretsKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.platform.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "lake" {
  for_each = local.lake_roles
  name     = "lake"
  role     = aws_iam_role.irsa[each.key].id
  policy   = data.aws_iam_policy_document.lake.json
}

resource "aws_iam_role_policy" "artifacts" {
  name   = "mlflow-artifacts"
  role   = aws_iam_role.irsa["mlflow"].id
  policy = data.aws_iam_policy_document.artifacts.json
}

resource "aws_iam_role_policy" "external_secrets" {
  name   = "read-platform-secrets"
  role   = aws_iam_role.irsa["external-secrets"].id
  policy = data.aws_iam_policy_document.external_secrets.json
}
