"""Speed measured the llama-bench way (measure, run, report) and thread tuning (tune)."""
