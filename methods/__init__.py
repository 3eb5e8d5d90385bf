"""Data-free methods, one file each; installed as ``dfkd_bench.methods``."""
