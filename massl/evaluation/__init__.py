"""Using a trained model: sliding-window `inference`, per-scan `metrics`, test-set `scoring`
(per_case.tsv), the encoder `probe` (Table 3) and `predict` on NIfTI scans."""
