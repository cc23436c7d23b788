"""Reads TensorBoard event files back (TFRecord framing + tensorboardX's Event proto), for tests of what the
metric writer leaves: every scalar as (file, tag, step, value), with each record's CRC checked."""

import glob
import os
import struct

from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c


def _records(path):
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[offset + 8 : offset + 12])[0] == masked_crc32c(header), (
            f"bad length CRC in {path}"
        )
        payload = data[offset + 12 : offset + 12 + length]
        (crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert crc == masked_crc32c(payload), f"bad record CRC in {path}"
        yield payload
        offset += 16 + length


def scalars(tb_dir) -> list[tuple[str, str, int, float]]:
    """(event file name, tag, step, value) of every scalar in every event file under `tb_dir`."""
    found = []
    for path in sorted(glob.glob(os.path.join(tb_dir, "events.out.tfevents.*"))):
        for payload in _records(path):
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                found.append((os.path.basename(path), value.tag, event.step, value.simple_value))
    return found
