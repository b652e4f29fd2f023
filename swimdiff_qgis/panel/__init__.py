"""The pages of the SwiMDiff dock (``..dock`` holds them): detection, pre-training and fine-tuning, and the
widgets they share (band names, the loss plot)."""
