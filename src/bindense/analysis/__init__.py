"""Model analysis: complexity accounting (params by bit-width, paper-rule params, memory, MACs, BOPs, OPs)."""

from bindense.analysis.complexity import ComplexityReport, LayerRow, group_rows, paper_rule_params, summarize

__all__ = ["ComplexityReport", "LayerRow", "group_rows", "paper_rule_params", "summarize"]
