"""iopsim: a discrete-event simulator of addiction-treatment programs (see the README)."""
