# Buckets: the data lake (EVENTOPS_LAKE_URL), MLflow's artifacts, and their access logs.
# Versioned, encrypted with the platform key, never public, TLS only; replaced or deleted
# versions expire after var.lake_noncurrent_days.
module "lake" {
  source          = "./modules/data-bucket"
  name            = "${local.name}-${local.account_id}-lake"
  kms_key_arn     = aws_kms_key.platform.arn
  log_bucket      = aws_s3_bucket.logs.id
  noncurrent_days = var.lake_noncurrent_days
}

module "artifacts" {
  source          = "./modules/data-bucket"
  name            = "${local.name}-${local.account_id}-artifacts"
  kms_key_arn     = aws_kms_key.platform.arn
  log_bucket      = aws_s3_bucket.logs.id
  noncurrent_days = var.lake_noncurrent_days
}

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:this bucket receives the other buckets' access logs; logging it to itself would loop
  #checkov:skip=CKV_AWS_144:access logs are not replicated; losing a region loses its access logs only
  #checkov:skip=CKV_AWS_145:S3 server access logging delivers only to buckets encrypted with SSE-S3
  #checkov:skip=CKV2_AWS_62:nothing reacts to new access-log objects
  bucket = "${local.name}-${local.account_id}-access-logs"
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

data "aws_iam_policy_document" "logs_bucket" {
  statement {
    sid       = "S3ServerAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
  statement {
    sid       = "TLSOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs_bucket.json
}
