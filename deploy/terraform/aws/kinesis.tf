# Kinesis Data Streams: the ingest stream `eventops ingest kinesis DATASET kinesis://<name>`
# reads, and (optional) a stream the worker's `forward` role puts the platform's events on.
# Both are encrypted with the platform key; on-demand capacity unless shards are given.
resource "aws_kinesis_stream" "ingest" {
  name             = "${local.name}-ingest"
  retention_period = var.kinesis_retention_hours
  shard_count      = var.kinesis_ingest_shards > 0 ? var.kinesis_ingest_shards : null
  encryption_type  = "KMS"
  kms_key_id       = aws_kms_key.platform.arn

  stream_mode_details {
    stream_mode = var.kinesis_ingest_shards > 0 ? "PROVISIONED" : "ON_DEMAND"
  }
}

resource "aws_kinesis_stream" "events" {
  count            = var.forward_events_to_kinesis ? 1 : 0
  name             = "${local.name}-events"
  retention_period = var.kinesis_retention_hours
  encryption_type  = "KMS"
  kms_key_id       = aws_kms_key.platform.arn

  stream_mode_details {
    stream_mode = "ON_DEMAND"
  }
}

# The worker reads the ingest stream (shards, iterators, records) and writes the events stream.
data "aws_iam_policy_document" "kinesis" {
  statement {
    sid = "ReadIngestStream"
    actions = [
      "kinesis:DescribeStreamSummary",
      "kinesis:ListShards",
      "kinesis:GetShardIterator",
      "kinesis:GetRecords",
    ]
    resources = [aws_kinesis_stream.ingest.arn]
  }
  dynamic "statement" {
    for_each = aws_kinesis_stream.events
    content {
      sid       = "WriteEventsStream"
      actions   = ["kinesis:PutRecords", "kinesis:PutRecord", "kinesis:DescribeStreamSummary"]
      resources = [statement.value.arn]
    }
  }
  statement {
    sid       = "StreamKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.platform.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["kinesis.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "kinesis" {
  name   = "kinesis"
  role   = aws_iam_role.irsa["worker"].id
  policy = data.aws_iam_policy_document.kinesis.json
}
