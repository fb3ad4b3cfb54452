"""Parses an OpenMetrics scrape on stdin with the Prometheus project's own Python parser
(python3-prometheus-client) and prints every sample as JSON: [name, labels, value].
Exits non-zero, with the parser's error, if the text is not valid OpenMetrics."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value])
json.dump(samples, sys.stdout)
