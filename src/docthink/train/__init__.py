"""SFT on docthink's export with TRL: the control-token setup, the data mixture, the trainer.

Needs the `train` extra (torch, transformers, trl, datasets, accelerate, peft, torchvision)."""
