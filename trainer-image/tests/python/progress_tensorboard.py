"""Reads a TensorBoard log directory with TensorBoard's own readers and prints
what they see as JSON: the file names, the raw events' file_version, and every
scalar series as [step, value] pairs (EventAccumulator, as TensorBoard's
scalars dashboard loads them).

Usage: progress_tensorboard.py LOGDIR
"""

import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2


def main(logdir):
    files = sorted(f for f in os.listdir(logdir) if "tfevents" in f)
    versions = []
    records = 0
    for name in files:
        # The raw loader checks the CRCs: a damaged record is dropped.
        for raw in RawEventFileLoader(os.path.join(logdir, name)).Load():
            records += 1
            event = event_pb2.Event.FromString(raw)
            if event.HasField("file_version"):
                versions.append(event.file_version)
    acc = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    scalars = {
        tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
    }
    json.dump(
        {"files": files, "file_versions": versions, "records": records, "scalars": scalars},
        sys.stdout,
    )


if __name__ == "__main__":
    main(sys.argv[1])
