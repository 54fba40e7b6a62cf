"""Speed and memory benchmarks of tfbdl layers, side by side with Keras and tfp.layers.

    python -m benchmarks.run            # full run (10-30 minutes), writes benchmarks/RESULTS.md
    python -m benchmarks.run --quick    # a short run of every case (about 2 minutes)

`run` drives two long-lived worker processes (`benchmarks.worker`): one on Keras 3 (Keras
and tfbdl layers) and one with `TF_USE_LEGACY_KERAS=1` (tfp.layers, which only run on
tf_keras). It alternates the timing repeats between them, so both see the same machine load,
and measures memory in a fresh process per case.
"""
