"""File helpers: atomic writes (a temporary file in the same folder, renamed into place) and file hashes."""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Type, Union

__all__ = ['atomic_write', 'atomic_write_folder', 'atomic_write_text', 'atomic_write_json', 'file_sha256']


def _umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` to ``path``; nothing is left behind on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; the result gets ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: Union[str, Path], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + '\n')


def read_json_object(path: Union[str, Path], what: str, error: Type[Exception], damaged: str = '') -> Dict[str, Any]:
    """The JSON object in ``path``; a missing, damaged or non-object file raises ``error`` naming ``what`` the file
    is (a stage summary, an evaluation) and, for a damaged one, ``damaged`` (what to do about it)."""
    path = Path(path)
    if not path.is_file():
        raise error(f'{what} {str(path)!r} does not exist')
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f'{what} {str(path)!r} is not valid JSON ({e}){"; " + damaged if damaged else ""}') from None
    if not isinstance(data, dict):
        raise error(f'{what} {str(path)!r} holds a {type(data).__name__}, not a JSON object')
    return data


def file_sha256(path: Union[str, Path]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_folder(folder: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_folder)``, then put ``tmp_folder`` in place of ``folder`` (replacing it): an interrupted
    write leaves no half-written folder. Whether an existing folder may be replaced is the caller's check."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f'.{folder.name}.', suffix='.tmp'))
    try:
        write(tmp)
        umask = _umask()
        os.chmod(tmp, 0o777 & ~umask)
        for file in tmp.rglob('*'):  # some writers (safetensors' save_file) create files 0600, as mkstemp does
            if file.is_file():
                os.chmod(file, 0o666 & ~umask)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
