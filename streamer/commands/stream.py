"""``emotrack stream``: live capture from a sound device (or a file paced at real time)."""

from __future__ import annotations

from engines.argtypes import positive

from ..errors import InputError
from .common import add_stream_options, run_pipeline


def add_parser(sub) -> None:
    s = sub.add_parser("stream", help="live capture from a sound device",
                       description="Capture from a sound device and publish emotion curves until interrupted.")
    s.add_argument("--device", default=None, help="sounddevice input device index or name (default: the system default)")
    s.add_argument("--list-devices", action="store_true", help="list capture devices and exit")
    s.add_argument("--stall-timeout", type=positive(float), default=5.0, metavar="S",
                   help="a device silent this long counts as lost and is reopened (default: 5)")
    s.add_argument("--reopen", type=int, default=5, metavar="N",
                   help="reopen a lost device up to N times with back-off before giving up (default: 5)")
    s.add_argument("--input", dest="paced_input", metavar="FILE",
                   help="instead of a device, replay FILE paced at real time through the same live path")
    add_stream_options(s)


def run(args) -> int:
    from ..sources import DeviceSource, open_source

    if args.list_devices:
        try:
            import sounddevice as sd
        except OSError as exc:
            raise InputError(f"PortAudio is missing (apt-get install libportaudio2): {exc}") from None
        devices = sd.query_devices()
        if not any(d.get("max_input_channels", 0) > 0 for d in devices):
            raise InputError(f"no capture device found ({len(devices)} audio device(s), none with inputs); "
                             "connect one, or replay a file through the live path: emotrack stream --input FILE")
        print(devices)
        return 0
    if args.paced_input:
        source = open_source(args.paced_input, realtime=True, name=args.name)
    else:
        dev = args.device
        if dev is not None and dev.isdigit():
            dev = int(dev)
        source = DeviceSource(dev, stall_timeout_s=args.stall_timeout, retries=max(0, args.reopen))
    return run_pipeline(args, source)
