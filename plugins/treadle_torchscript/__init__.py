"""treadle built-in plugin: the TorchScript, torch.export and plain PyTorch export formats."""
