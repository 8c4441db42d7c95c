"""Publish an exported folder (recipes/export.py) to the Hugging Face Hub.

    python recipes/push_to_hub.py --folder hub/prdarts_c10_mini --repo_id my-org/prdarts_c10_mini.sp99_cifar10 --dry-run
    python recipes/push_to_hub.py --folder hub/prdarts_c10_mini --repo_id my-org/prdarts_c10_mini.sp99_cifar10 --private

The folder is checked first (config.json names an architecture timm knows, model.safetensors reads and holds
no scores or masks, the card's metadata parses as the Hub's) and ``--repo_id`` against the repo the folder was
exported for (the card's ``hf-hub:`` name; another repo only with ``--allow_other_repo``). ``--dry-run`` stops
there and lists exactly what would be uploaded. Otherwise ``huggingface_hub`` creates the repo
(``create_repo``, ``exist_ok``) and uploads the folder (``upload_folder``) to ``--revision``, deleting every
file of the repo the folder does not hold (``delete_patterns``: a re-export without ``--sparse`` leaves no stale
``model.sparse.safetensors``; ``.gitattributes`` stays). The token comes from the usual places (``HF_TOKEN``,
``huggingface-cli login``) unless ``--token`` is given.
"""
import argparse
from pathlib import Path

import prdarts_timm  # noqa: F401  (registers the models, so config.json's architecture is known)
from prdarts_timm.cli import run_main
from prdarts_timm.hub import HubError, card_repo_id, check_folder, check_repo_id


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--folder', required=True, help='the folder recipes/export.py wrote')
    parser.add_argument('--repo_id', required=True, help='namespace/name on the Hub')
    parser.add_argument('--private', action='store_true', help='create the repo private')
    parser.add_argument('--revision', default=None, help='branch to upload to (default: main)')
    parser.add_argument('--token', default=None, help='Hub token (default: HF_TOKEN or the login cache)')
    parser.add_argument('--commit_message', default=None)
    parser.add_argument('--allow_other_repo', action='store_true',
                        help='upload to another repo than the one the card was exported for (its hf-hub: name)')
    parser.add_argument('--dry-run', dest='dry_run', action='store_true', help='check and list, upload nothing')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    repo_id = check_repo_id(args.repo_id)
    folder = Path(args.folder)
    files = check_folder(folder)
    exported_for = card_repo_id(folder)
    if exported_for != repo_id and not args.allow_other_repo:
        raise HubError(f'{folder} was exported for {exported_for} (its card loads hf-hub:{exported_for}), not '
                       f'{repo_id}: export again with --hub_id {repo_id}, or pass --allow_other_repo to upload it '
                       'as it is')
    where = f'{repo_id}' + (f'@{args.revision}' if args.revision else '') + (' (private)' if args.private else '')
    print(f'{"would upload" if args.dry_run else "uploading"} {len(files)} file(s) to {where}:')
    for path in files:
        print(f'  {path.relative_to(folder)}  {path.stat().st_size} bytes')
    if args.dry_run:
        return
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    api.create_repo(repo_id, private=args.private, exist_ok=True, repo_type='model')
    if args.revision:
        api.create_branch(repo_id, branch=args.revision, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), revision=args.revision, delete_patterns=['*'],
                             commit_message=args.commit_message or f'Upload {folder.name} (prdarts-timm export)')
    print(f'uploaded: {info}')


if __name__ == '__main__':
    run_main(main)
