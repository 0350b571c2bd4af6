"""The report: runs collected into tables (aggregate), plots, the statistics of comparisons
(uncertainty, comparisons, time_to_quality, claims), HTML tables, and a run checked against the
committed reference (reference)."""
