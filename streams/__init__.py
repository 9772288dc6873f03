"""riskstream's streaming service: settings, Faust app, wire records, agents, CLI."""
