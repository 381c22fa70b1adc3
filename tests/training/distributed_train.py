"""Run by ``torch.distributed.run`` in test_engine: one training process of several, which records the
example indices it drew (``drawn_<rank>.json`` beside the run) so the test can check the shards."""

import json
import os
import sys
from pathlib import Path

from seeinpairs.training import TrainConfig, train
from seeinpairs.training.examples import CaseExamples

drawn: list[list[int]] = []
original = CaseExamples.batch


def recording_batch(self, indices, epoch):
    drawn.append([int(i) for i in indices])
    return original(self, indices, epoch)


CaseExamples.batch = recording_batch
config = TrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
result = train(config, progress=False)
rank = os.environ["RANK"]
(Path(config.output_dir) / f"drawn_{rank}.json").write_text(json.dumps({"drawn": drawn, "steps": result.steps}))
