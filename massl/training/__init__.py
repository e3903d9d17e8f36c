"""Training: one loop (`loop`) over method strategies (`strategies`), batch augmentation
(`augment`), the resume chain (`checkpoint`), when to stop (`stopping`), and the `massl train`
command that writes a run folder (`run`)."""
