# EventBridge, both ways.
#  Out: the worker's `forward` role puts lifecycle events on the platform bus (source
#       "eventops", detail-type = the event type); rules on it can start Lambda, Step Functions...
#  In:  an API destination posts to the platform API: CloudWatch alarm state changes of the
#       platform's alarms to /api/aws/eventbridge/alarms (they become alert.* events), and the
#       events of var.eventbridge_pipeline_rules to /api/aws/eventbridge/pipelines/<name>.
#       The connection sends `Authorization: Bearer <token>`: an EventOps operator token
#       (`eventops tokens create eventbridge --role operator`) given as a sensitive variable.
#       Until that token exists (the platform's first apply), the inbound half is not created.
locals {
  eventbridge_in    = var.eventbridge_api_token != null
  pipeline_rules_in = local.eventbridge_in ? var.eventbridge_pipeline_rules : {}
}
resource "aws_cloudwatch_event_bus" "platform" {
  name               = local.name
  kms_key_identifier = aws_kms_key.platform.arn
}

resource "aws_cloudwatch_event_archive" "platform" {
  name             = "${local.name}-events"
  event_source_arn = aws_cloudwatch_event_bus.platform.arn
  retention_days   = var.eventbridge_archive_days
}

data "aws_iam_policy_document" "eventbridge_put" {
  statement {
    sid       = "PutPlatformEvents"
    actions   = ["events:PutEvents"]
    resources = [aws_cloudwatch_event_bus.platform.arn]
  }
  statement {
    sid       = "BusKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.platform.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["events.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "eventbridge_put" {
  name   = "eventbridge-put"
  role   = aws_iam_role.irsa["worker"].id
  policy = data.aws_iam_policy_document.eventbridge_put.json
}

resource "aws_cloudwatch_event_connection" "platform_api" {
  count              = local.eventbridge_in ? 1 : 0
  name               = "${local.name}-api"
  description        = "EventOps API, operator token"
  authorization_type = "API_KEY"
  auth_parameters {
    api_key {
      key   = "Authorization"
      value = "Bearer ${var.eventbridge_api_token}"
    }
  }
}

resource "aws_cloudwatch_event_api_destination" "alarms" {
  count                            = local.eventbridge_in ? 1 : 0
  name                             = "${local.name}-alarms"
  connection_arn                   = aws_cloudwatch_event_connection.platform_api[0].arn
  invocation_endpoint              = "${var.api_base_url}/api/aws/eventbridge/alarms"
  http_method                      = "POST"
  invocation_rate_limit_per_second = 10
}

resource "aws_cloudwatch_event_api_destination" "pipelines" {
  for_each                         = local.pipeline_rules_in
  name                             = "${local.name}-run-${each.key}"
  connection_arn                   = aws_cloudwatch_event_connection.platform_api[0].arn
  invocation_endpoint              = "${var.api_base_url}/api/aws/eventbridge/pipelines/${each.key}"
  http_method                      = "POST"
  invocation_rate_limit_per_second = 5
}

# Alarm state changes of the platform's own alarms (their names share the prefix) only.
resource "aws_cloudwatch_event_rule" "alarms" {
  count       = local.eventbridge_in ? 1 : 0
  name        = "${local.name}-alarm-state"
  description = "EventOps alarms to the platform API as alert events"
  event_pattern = jsonencode({
    source        = ["aws.cloudwatch"]
    "detail-type" = ["CloudWatch Alarm State Change"]
    detail        = { alarmName = [{ prefix = "${local.alarm_prefix}-" }] }
  })
}

resource "aws_cloudwatch_event_rule" "pipelines" {
  for_each      = local.pipeline_rules_in
  name          = "${local.name}-run-${each.key}"
  description   = "Starts EventOps pipeline ${each.key}"
  event_pattern = each.value
}

resource "aws_sqs_queue" "eventbridge_dlq" {
  name                      = "${local.name}-eventbridge-dlq"
  kms_master_key_id         = aws_kms_key.platform.arn
  message_retention_seconds = 1209600 # 14 days, the most SQS keeps
}

data "aws_iam_policy_document" "eventbridge_dlq" {
  statement {
    sid       = "EventBridgeDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.eventbridge_dlq.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values = concat(
        [for rule in aws_cloudwatch_event_rule.alarms : rule.arn],
        [for rule in aws_cloudwatch_event_rule.pipelines : rule.arn],
      )
    }
  }
}

resource "aws_sqs_queue_policy" "eventbridge_dlq" {
  count     = local.eventbridge_in ? 1 : 0
  queue_url = aws_sqs_queue.eventbridge_dlq.id
  policy    = data.aws_iam_policy_document.eventbridge_dlq.json
}

# The role EventBridge assumes to call the API destinations, and nothing else.
data "aws_iam_policy_document" "eventbridge_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "eventbridge_invoke" {
  count              = local.eventbridge_in ? 1 : 0
  name               = "${local.name}-eventbridge-invoke"
  assume_role_policy = data.aws_iam_policy_document.eventbridge_assume.json
}

data "aws_iam_policy_document" "eventbridge_invoke" {
  statement {
    sid     = "InvokePlatformApi"
    actions = ["events:InvokeApiDestination"]
    resources = concat(
      [for d in aws_cloudwatch_event_api_destination.alarms : d.arn],
      [for d in aws_cloudwatch_event_api_destination.pipelines : d.arn],
    )
  }
}

resource "aws_iam_role_policy" "eventbridge_invoke" {
  count  = local.eventbridge_in ? 1 : 0
  name   = "invoke-api-destinations"
  role   = aws_iam_role.eventbridge_invoke[0].id
  policy = data.aws_iam_policy_document.eventbridge_invoke.json
}

resource "aws_cloudwatch_event_target" "alarms" {
  count    = local.eventbridge_in ? 1 : 0
  rule     = aws_cloudwatch_event_rule.alarms[0].name
  arn      = aws_cloudwatch_event_api_destination.alarms[0].arn
  role_arn = aws_iam_role.eventbridge_invoke[0].arn
  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 24
  }
  dead_letter_config {
    arn = aws_sqs_queue.eventbridge_dlq.arn
  }
}

resource "aws_cloudwatch_event_target" "pipelines" {
  for_each = local.pipeline_rules_in
  rule     = aws_cloudwatch_event_rule.pipelines[each.key].name
  arn      = aws_cloudwatch_event_api_destination.pipelines[each.key].arn
  role_arn = aws_iam_role.eventbridge_invoke[0].arn
  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 24
  }
  dead_letter_config {
    arn = aws_sqs_queue.eventbridge_dlq.arn
  }
}
