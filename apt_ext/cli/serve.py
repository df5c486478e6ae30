"""``apt-ext serve``: an APT checkpoint behind an OpenAI-compatible HTTP API (docs/cloud.md)."""
from __future__ import annotations

import argparse

from apt_ext.cli.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an APT checkpoint through an OpenAI-compatible API (FastAPI + uvicorn)",
                       description="Serve an APT checkpoint at /v1/models, /v1/chat/completions and "
                       "/v1/completions (streaming with server-sent events). API keys are required "
                       "unless --no-auth.")
    p.add_argument("--checkpoint", required=True, help="a directory written by apt-ext train/demo "
                   "(model/ + tokenizer.json) or by APTModel.save_pretrained")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: the checkpoint folder's name)")
    p.add_argument("--device", default=None, help="torch device such as cpu or cuda:0 (default: a GPU if there is one, else the CPU)")
    p.add_argument("--fp4", choices=("nvfp4", "mxfp4", "nf4"), default=None, help="quantise the Linear layers to FP4 (default: keep float weights)")
    p.add_argument("--vgpu-config", default=None, help="VGPUStack config (JSON text or file): keep the weights in that stack (default: none)")
    p.add_argument("--api-key-file", default=None, help="file with one accepted API key per line (default: $APT_API_KEYS, comma-separated)")
    p.add_argument("--no-auth", action="store_true", help="accept requests without a key (only for a server nobody else can reach)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--max-prompt-tokens", type=int, default=None, help="longest prompt (default: the model's context - 1)")
    p.add_argument("--max-tokens", type=int, default=256, help="largest max_tokens a request may ask for (default 256)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument("--max-queue", type=int, default=32, help="requests waiting beyond the batch before 429 (default 32)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request, queueing included (default 60)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a lone request waits for company (default 5 ms)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError("--port", f"expected 0..65535, got {args.port}")
    if args.no_auth and args.api_key_file:
        raise UsageError("--no-auth", "and --api-key-file: choose one")
    import asyncio

    import uvicorn

    from apt_ext.cli.options import local_model
    from apt_ext.cloud.server import ServerLimits, create_app, load_api_keys
    keys = None if args.no_auth else load_api_keys(args.api_key_file)
    limits = ServerLimits(max_body_bytes=args.max_body_bytes, max_prompt_tokens=args.max_prompt_tokens,
                          max_tokens=args.max_tokens, max_batch=args.max_batch, max_queue=args.max_queue,
                          request_timeout_s=args.timeout, batch_wait_s=args.batch_wait_ms / 1000)
    model = local_model(args, name=args.model_name)
    app = create_app(model, keys, limits)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    async def announce_and_serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            sock = server.servers[0].sockets[0].getsockname()
            print(f"apt-ext serve: model {model.name!r} on {model.device} at http://{sock[0]}:{sock[1]}/v1 "
                  f"(auth {'off' if keys is None else f'on, {len(keys)} key(s)'})", flush=True)
        await task

    asyncio.run(announce_and_serve())
    return 0
