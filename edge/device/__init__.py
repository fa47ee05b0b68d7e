"""What this machine is: board, cores, memory, accelerators, thermals (from /proc, /sys, sysctl)."""
