"""`deepcluster` with PyTorch's direct torch calls off (Keras's layer calls throughout).

For side-by-side runs of the two PyTorch routes through `cycle.py`:

    python benchmarks/cycle.py --backends torch --cli "python benchmarks/keras_calls_cli.py" \
        --out docs/benchmarks/cycle/torch_keras_calls.json -- --source idx --data-dir DIR
"""

import functools
import os

os.environ["KERAS_BACKEND"] = "torch"  # the switches are PyTorch's; set before Keras loads

import keras_deepcluster as kdc  # noqa: E402
from keras_deepcluster_cli.main import main  # noqa: E402

# The switches' defaults, turned off: DeepCluster(direct_torch=...), FeatureExtractor(...).
for cls in (kdc.DeepCluster, kdc.FeatureExtractor):
    cls.__init__ = functools.partialmethod(cls.__init__, direct_torch=False)

if __name__ == "__main__":
    main(prog_name="deepcluster")
