"""riskstream's machine learning; never imports Faust or Kafka."""
