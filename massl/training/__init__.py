"""Training: one loop (`loop`) over method strategies (`strategies`), batch augmentation
(`augment`), verified checkpoints and resume (`checkpoint`), and the `massl train` /
`massl evaluate` commands that write a run folder (`run`)."""
