"""DDP driver for tests/test_train.py (started by torchrun, one process per rank; not collected by pytest).

Trains through the public API, ``ferkit.train``, and saves this rank's weights after every epoch as
DUMPS/rank<N>.pt from an epoch callback (callbacks run in every process), so the test can see whether all
ranks ended with the same model.

usage: torchrun --nproc_per_node 2 ddp_driver.py DATA OUT DUMPS
"""

import sys
from pathlib import Path

import torch

from ferkit import api
from ferkit.checkpoint import unwrap


def main(data: str, out: str, dumps: str) -> None:
    def dump_weights(trainer, epoch, row):
        Path(dumps).mkdir(parents=True, exist_ok=True)
        torch.save(
            {k: v.detach().cpu() for k, v in unwrap(trainer.model).state_dict().items()},
            Path(dumps) / f"rank{trainer.dist.rank}.pt",
        )

    api.train(data=data, model="seed1_cnn", epochs=1, batch_size=32, out=out, quiet=True, callbacks=[dump_weights])


if __name__ == "__main__":
    main(*sys.argv[1:4])
