"""Data set adapters and generators; each produces a CaseTable and a Task."""

# Each adapter module registers its adapter in seeinpairs.datasets.registry.DATASETS as it is imported.
from . import (aptos, chexpert, dicomfolder, fitzpatrick, ham10000, imagefolder, isic, medmnist,  # noqa: F401,E402
               mimic, nih, odir)
