"""Methods that see real training data; installed as ``dfkd_bench.baselines``."""
