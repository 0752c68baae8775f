"""What the machine has: GPUs through NVML (real or scripted) and host RAM/CPU through psutil."""
