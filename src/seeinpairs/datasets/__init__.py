"""Data set adapters and generators; each produces a CaseTable and a Task."""

# Importing the adapters registers them in seeinpairs.datasets.registry.DATASETS.
from . import (aptos, chexpert, dicomfolder, fitzpatrick, ham10000, imagefolder, isic, medmnist,  # noqa: F401,E402
               mimic, nih, odir)
