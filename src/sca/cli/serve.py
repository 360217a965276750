"""`sca serve` and `sca demo`: the JSON API and the web page."""

from __future__ import annotations

import math
import os
import sys

from ..errors import InputError, require_whole
from ..options import ServerLimits
from .common import add_model_options, add_tracker_option, load_captioner, model_spec


def add(commands) -> None:
    limits = ServerLimits()
    for name, summary in (("serve", "serve the JSON API (OpenAPI at /docs) and the web page"),
                          ("demo", "serve the web page and open it in a browser (the same server as serve)")):
        server = commands.add_parser(name, help=summary, description=summary + ". Every limit below answers a request "
                                     "that goes past it with a 4xx that names it.")
        server.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only; "
                            "0.0.0.0 listens on every interface: set --api-key then)")
        server.add_argument("--port", type=int, default=7860)
        server.add_argument("--api-key", help="require this key on /api/* (X-API-Key or Authorization: Bearer); "
                            "default: $SCA_API_KEY, else none")
        server.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                            help="a web origin (https://example.org) whose pages may POST here; repeatable")
        server.add_argument("--allow-host", action="append", metavar="NAME",
                            help="a name or address the server answers to in the Host header, besides the loopback "
                            "names when it listens on loopback (repeatable; '*': any). Refuses DNS rebinding. "
                            "Default on other addresses: any")
        server.add_argument("--max-upload-mb", type=float, default=limits.max_upload_bytes / 1e6,
                            help="largest upload, in MB")
        server.add_argument("--max-megapixels", type=float, default=limits.max_pixels / 1e6,
                            help="largest image, in megapixels")
        server.add_argument("--max-aspect-ratio", type=float, default=limits.max_aspect_ratio,
                            help="widest (or tallest) image shape")
        server.add_argument("--max-regions", type=int, default=limits.max_regions, help="regions per caption request")
        server.add_argument("--max-points-per-side", type=int, default=limits.max_points_per_side,
                            help="anything mode's densest grid")
        server.add_argument("--max-video-frames", type=int, default=limits.max_video_frames,
                            help="the longest video, in frames")
        server.add_argument("--queue-size", type=int, default=limits.queue_size,
                            help="requests waiting for the model (then 503)")
        server.add_argument("--timeout", type=float, default=limits.request_timeout, help="seconds a request may take")
        server.add_argument("--max-json-mb", type=float, default=limits.max_json_bytes / 1e6,
                            help="largest JSON body, in MB (counted while it streams, before parsing)")
        server.add_argument("--max-video-megapixels", type=float, default=limits.max_video_pixels / 1e6,
                            help="largest video frame, in megapixels")
        server.add_argument("--header-timeout", type=float, default=limits.header_timeout,
                            help="seconds a connection may take to send a request's headers")
        server.add_argument("--max-idle-connections", type=int, default=limits.max_idle_connections,
                            help="connections waiting for their headers at once (then the longest-waiting is closed)")
        server.add_argument("--max-connections", type=int, default=limits.max_connections,
                            help="connections and requests in flight at once (then 503)")
        server.set_defaults(open=name == "demo")
        add_tracker_option(server)
        add_model_options(server)
        server.set_defaults(run=run)



def _millions(value: float, option: str) -> int:
    """A limit given in millions (MB, megapixels) as a whole count, or one line naming the option."""
    if not math.isfinite(value) or value * 1e6 < 1:
        raise InputError(f"{option} must be a positive number, got {value:g}")
    return int(value * 1e6)


def run(args) -> int:
    """`sca serve` (and `sca demo`, which also opens the page): the JSON API and the page."""
    import logging
    import threading
    import webbrowser

    from ..app.server import Limits, Security, create_app, default_hosts, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    limits = Limits(max_upload_bytes=_millions(args.max_upload_mb, "--max-upload-mb"),
                    max_pixels=_millions(args.max_megapixels, "--max-megapixels"),
                    max_aspect_ratio=args.max_aspect_ratio, max_regions=args.max_regions,
                    max_points_per_side=args.max_points_per_side, max_video_frames=args.max_video_frames,
                    queue_size=args.queue_size, request_timeout=args.timeout,
                    max_json_bytes=_millions(args.max_json_mb, "--max-json-mb"),
                    max_video_pixels=_millions(args.max_video_megapixels, "--max-video-megapixels"),
                    header_timeout=args.header_timeout, max_idle_connections=args.max_idle_connections,
                    max_connections=args.max_connections)
    for name in ("max_regions", "max_points_per_side", "max_video_frames", "queue_size", "max_idle_connections",
                 "max_connections"):
        require_whole(getattr(limits, name), f"--{name.replace('_', '-')}")
    if not (limits.request_timeout > 0 and limits.header_timeout > 0 and limits.max_aspect_ratio >= 1):
        raise InputError("--timeout and --header-timeout must be positive and --max-aspect-ratio at least 1")
    api_key = args.api_key or os.environ.get("SCA_API_KEY") or None
    security = Security(api_key=api_key, allowed_origins=tuple(args.allow_origin or ()),
                        allowed_hosts=default_hosts(args.host, tuple(args.allow_host or ())))
    captioner = load_captioner(args)
    app = create_app(captioner.model, model_spec(args)[0], limits, security, captioner.chunk_size, args.tracker)
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"SCA on {url} (API docs: {url}/docs; Ctrl-C to stop)", file=sys.stderr, flush=True)
    if args.open and (os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32")):
        threading.Timer(1.5, webbrowser.open, [url]).start()
    serve(app, args.host, args.port)
    return 0

