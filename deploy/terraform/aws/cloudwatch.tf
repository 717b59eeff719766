# CloudWatch: what `eventops serve` and the worker's `forward` role put in var.cloudwatch_namespace
# (docs/aws.md lists the metrics), alarms on it, and one dashboard.
#   Requests, Errors        Count         per Deployment (and per Deployment/Model/Version)
#   Latency                 Milliseconds  statistic set; LatencyP50 / LatencyP95 estimates
#   <monitor metric>        None          per Monitor, e.g. DriftShare, Accuracy
# Alarm names start with local.alarm_prefix, which the EventBridge rule in eventbridge.tf
# matches: their state changes come back to EventOps as alert.fired / alert.resolved.
locals {
  alarm_prefix = "${local.name}-alarm"
}

data "aws_iam_policy_document" "cloudwatch_put" {
  statement {
    sid     = "PutPlatformMetrics"
    actions = ["cloudwatch:PutMetricData"]
    # PutMetricData has no resource-level permissions; the namespace condition is the limit.
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.cloudwatch_namespace]
    }
  }
}

resource "aws_iam_role_policy" "cloudwatch_put" {
  for_each = toset(["worker", "serve"])
  name     = "cloudwatch-put"
  role     = aws_iam_role.irsa[each.key].id
  policy   = data.aws_iam_policy_document.cloudwatch_put.json
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each            = toset(var.monitored_deployments)
  alarm_name          = "${local.alarm_prefix}-${each.key}-errors"
  alarm_description   = "EventOps deployment ${each.key}: refused or failed requests"
  namespace           = var.cloudwatch_namespace
  metric_name         = "Errors"
  dimensions          = { Deployment = each.key }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.alarm_errors_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
}

resource "aws_cloudwatch_metric_alarm" "latency" {
  for_each            = toset(var.monitored_deployments)
  alarm_name          = "${local.alarm_prefix}-${each.key}-latency-p95"
  alarm_description   = "EventOps deployment ${each.key}: p95 latency"
  namespace           = var.cloudwatch_namespace
  metric_name         = "LatencyP95"
  dimensions          = { Deployment = each.key }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.alarm_latency_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
}

resource "aws_cloudwatch_metric_alarm" "drift" {
  for_each            = toset(var.drift_monitors)
  alarm_name          = "${local.alarm_prefix}-${each.key}-drift"
  alarm_description   = "EventOps monitor ${each.key}: share of drifted features"
  namespace           = var.cloudwatch_namespace
  metric_name         = "DriftShare"
  dimensions          = { Monitor = each.key }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = 1
  threshold           = var.alarm_drift_share
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
}

resource "aws_cloudwatch_dashboard" "platform" {
  dashboard_name = local.name
  dashboard_body = jsonencode({
    widgets = concat(
      [for i, d in var.monitored_deployments : {
        type   = "metric"
        x      = 0
        y      = i * 6
        width  = 12
        height = 6
        properties = {
          title   = "${d}: requests and errors"
          region  = var.region
          stat    = "Sum"
          period  = 60
          metrics = [[var.cloudwatch_namespace, "Requests", "Deployment", d], [".", "Errors", ".", "."]]
        }
      }],
      [for i, d in var.monitored_deployments : {
        type   = "metric"
        x      = 12
        y      = i * 6
        width  = 12
        height = 6
        properties = {
          title   = "${d}: latency (ms)"
          region  = var.region
          stat    = "Maximum"
          period  = 60
          metrics = [[var.cloudwatch_namespace, "LatencyP50", "Deployment", d], [".", "LatencyP95", ".", "."]]
        }
      }],
      [for i, m in var.drift_monitors : {
        type   = "metric"
        x      = 0
        y      = (length(var.monitored_deployments) + i) * 6
        width  = 24
        height = 6
        properties = {
          title   = "${m}: drift share"
          region  = var.region
          stat    = "Maximum"
          period  = 3600
          metrics = [[var.cloudwatch_namespace, "DriftShare", "Monitor", m]]
        }
      }],
    )
  })
}
