"""nbllm's benchmark harness: nbllm and its peers, same model, same settings, same machine, one run."""
