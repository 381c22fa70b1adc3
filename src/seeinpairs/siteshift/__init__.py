"""Acquisition (site) shift: simulated sites, leave-one-site-out splits, augmentation, recalibration.

The study this serves asks whether a few healthy references from a new site
recover the accuracy lost to acquisition shift, compared with the single-image
model, with references from other sites, and with two controls that need no
references at inference: a single-image model recalibrated on the same healthy
images (:mod:`.recalibration`), and one trained with acquisition augmentation
(:mod:`.augment`, the ``augment`` field of a training config).

* :mod:`.acquisition`: per-site acquisition transforms on real images, named protocols,
  :func:`simulate_sites` for data sets without sites;
* :mod:`.protocols`: :func:`leave_one_site_out` and the new-site vs training-site banks;
* :mod:`.augment`: random acquisition transforms, shared by an example's images or independent;
* :mod:`.recalibration`: the healthy-option bias fitted on a site's healthy references.
"""

from .acquisition import (
    PROTOCOLS,
    AcquisitionProtocol,
    AcquisitionTransform,
    assign_sites,
    create_protocol,
    list_protocols,
    simulate_sites,
)
from .augment import AcquisitionAugment, augment_rng
from .protocols import (
    SITE_REFERENCE_SPLIT,
    SiteReferenceBanks,
    leave_one_site_out,
    site_reference_banks,
    sites_of,
)
from .recalibration import (
    HealthyBias,
    RecalibrationError,
    apply_healthy_bias,
    fit_healthy_bias,
    fit_healthy_bias_records,
    predicted_healthy_rate,
    recalibrate,
    record_scores,
    specificity,
)

__all__ = ["PROTOCOLS", "SITE_REFERENCE_SPLIT", "AcquisitionAugment", "AcquisitionProtocol", "AcquisitionTransform",
           "HealthyBias", "RecalibrationError", "SiteReferenceBanks", "apply_healthy_bias", "assign_sites",
           "augment_rng", "create_protocol", "fit_healthy_bias", "fit_healthy_bias_records", "leave_one_site_out",
           "list_protocols", "predicted_healthy_rate", "recalibrate", "record_scores", "simulate_sites",
           "site_reference_banks", "sites_of", "specificity"]
