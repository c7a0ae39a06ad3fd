"""`llmesr-embed`: the semantic tables and similar users of a prepared dataset folder."""

from __future__ import annotations

import argparse
import os
import sys

from llmesr.cli.common import DefaultsHelp, StageProgress, add_debug_option, count, format_rows, run_command
from llmesr.embed import CACHE, SIMILAR_USERS, USER_VECTORS, embed_dataset, load_table
from llmesr.errors import SettingsError
from llmesr.text import DEFAULT_ITEM_TEMPLATE, DEFAULT_USER_TEMPLATE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmesr-embed",
        description="Add text embeddings, their PCA and every user's similar users to a prepared dataset.",
        formatter_class=DefaultsHelp,
    )
    p.add_argument("dataset", help="a folder written by llmesr-prepare")
    p.add_argument(
        "--encoder",
        choices=("sentence-transformers", "openai", "hashing", "precomputed"),
        default="sentence-transformers",
        help="where the vectors come from (hashing: a bag-of-words baseline without a language model)",
    )
    p.add_argument(
        "--model",
        default=os.environ.get("LLMESR_EMBED_MODEL"),
        help="sentence-transformers model folder (default: the offline MiniLM), or the API's model name",
    )
    p.add_argument("--device", help="sentence-transformers device (default: GPU when present)")
    p.add_argument(
        "--devices",
        help="sentence-transformers on several devices at once, comma-separated (e.g. cuda:0,cuda:1): one "
        "worker process each",
    )
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"), help="OpenAI-compatible API base URL")
    p.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key (preferred)"
    )
    p.add_argument("--api-key", help="the API key itself (visible to other users in the process list)")
    p.add_argument("--timeout", type=float, default=60.0, help="--encoder openai: seconds per request, all of it")
    p.add_argument("--retries", type=count(0), default=5, help="--encoder openai: retries of a failed request")
    p.add_argument("--item-table", help="precomputed item table (.npy, or the original's .pkl with --allow-pickle)")
    p.add_argument("--user-table", help="precomputed user table (.npy, or .pkl with --allow-pickle)")
    p.add_argument("--similar-table", help="precomputed similar users (.npy, or the original's sim_user_100.pkl)")
    p.add_argument("--similar-zero-based", action="store_true", help="--similar-table holds 0-based row numbers")
    p.add_argument("--allow-pickle", action="store_true", help="UNSAFE for untrusted files: read .pkl tables")
    p.add_argument("--item-template", default=DEFAULT_ITEM_TEMPLATE, help="item prompt with {field} placeholders")
    p.add_argument("--user-template", default=DEFAULT_USER_TEMPLATE, help="user prompt with a {titles} placeholder")
    p.add_argument(
        "--user-vectors",
        choices=USER_VECTORS,
        default="prompt",
        help="prompt: encode each user's prompt (the paper's); item-mean: the mean of the unit vectors of their "
        "last 50 training items, no user text encoded (the text stage is the items alone)",
    )
    p.add_argument("-k", "--similar", type=count(1), default=SIMILAR_USERS, help="similar users kept per user")
    p.add_argument("--hidden", type=count(1), default=64, help="PCA dimension (the ID view's hidden size)")
    p.add_argument(
        "--approximate", action="store_true", help="approximate similar users (inverted file), for millions of users"
    )
    p.add_argument("--cache", default=str(CACHE), help="embedding cache")
    p.add_argument("--no-cache", action="store_true", help="encode everything, store nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")
    add_debug_option(p)
    return p


def make_encoder(args: argparse.Namespace):
    if args.encoder == "sentence-transformers":
        from llmesr.encoders import SentenceTransformerEncoder

        devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
        return SentenceTransformerEncoder(args.model, device=args.device, devices=devices)
    if args.encoder == "openai":
        from llmesr.encoders import OpenAIEncoder

        if not args.base_url or not args.model:
            raise SettingsError("--encoder openai needs --base-url (or OPENAI_BASE_URL) and --model")
        return OpenAIEncoder(
            args.base_url,
            args.model,
            api_key=args.api_key or os.environ.get(args.api_key_env),
            timeout=args.timeout,
            retries=args.retries,
        )
    if args.encoder == "hashing":
        from llmesr.encoders import HashingEncoder

        return HashingEncoder()
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> None:
        from llmesr.data import load_dataset

        load_dataset(args.dataset)  # a missing or damaged folder is reported before the language model loads
        tables = {}
        if args.encoder == "precomputed":
            users_needed = args.user_vectors == "prompt"
            if not args.item_table or (users_needed and not args.user_table):
                raise SettingsError("--encoder precomputed needs --item-table" + (" and --user-table" * users_needed))
            tables = {"item_table": load_table(args.item_table, args.allow_pickle)}
            if args.user_table:
                tables["user_table"] = load_table(args.user_table, args.allow_pickle)
        if args.similar_table:
            tables["similar_table"] = load_table(args.similar_table, args.allow_pickle)
        bar = StageProgress(enabled=not args.quiet)
        encoder = make_encoder(args)
        try:
            info = embed_dataset(
                args.dataset,
                encoder,
                **tables,
                item_template=args.item_template,
                user_template=args.user_template,
                user_vectors=args.user_vectors,
                k=args.similar,
                hidden=args.hidden,
                cache_dir=None if args.no_cache else args.cache,
                approximate=args.approximate,
                similar_zero_based=args.similar_zero_based,
                progress=bar,
            )
        finally:
            bar.close()
            if callable(getattr(encoder, "close", None)):
                encoder.close()  # worker processes of --devices
        if not args.quiet:
            rows = [
                ("encoder", info["encoder"]),
                ("dimension", str(info["dim"])),
                ("PCA dimension", str(args.hidden)),
                ("user vectors", info["user_vectors"]),
                ("similar users", f"{args.similar} ({info['retrieval']})"),
            ]
            for what in ("items", "users"):
                if f"{what}_texts" in info:
                    t = info[f"{what}_texts"]
                    rows.append(
                        (
                            f"{what} texts",
                            f"{t['texts']:,} ({t['distinct']:,} distinct, {t['cache_hits']:,} cached, "
                            f"{t['encoded']:,} encoded, ~{t['encoded_tokens_estimated']:,} tokens)",
                        )
                    )
            names = {
                "encode_items": "encoding items",
                "encode_users": "encoding users",
                "item_mean_users": "user vectors (item mean)",
                "pca": "PCA",
            }
            for stage, value in info["seconds"].items():
                rate = ""
                t = info.get(f"{stage.removeprefix('encode_')}_texts", {})
                if t.get("encoded") and value > 0:  # texts/s and tokens/s of what was encoded
                    rate = f" ({t['encoded'] / value:,.0f} texts/s, ~{t['encoded_tokens_estimated'] / value:,.0f} tokens/s)"
                rows.append((f"{names.get(stage, stage.replace('_', ' '))} time", f"{value:.1f} s{rate}"))
            print(format_rows(rows))

    return run_command(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
