"""Writing files so that a reader, or a run killed at any moment, sees the
old file or the new one, never half of one: each is written under a
temporary name beside it and renamed over it.

Temporary names are ``.NAME.PID.partial``; run_folder.remove_partial_files
deletes those a killed run left in its folder.
"""
import json
import os


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file beside ``path``, then
    rename it over ``path``: readers see the old file or the new, never half."""
    tmp = os.path.join(os.path.dirname(path),
                       '.{}.{}.partial'.format(os.path.basename(path),
                                               os.getpid()))
    try:
        with open(tmp, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    atomic_write(path, lambda f: f.write(
        (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode()))


def write_png(path, figure, **savefig):
    """Save a Matplotlib ``figure`` as PNG (``savefig``: its options, such as
    dpi), atomically, and free it."""
    from matplotlib import pyplot
    atomic_write(path, lambda f: figure.savefig(f, format='png', **savefig))
    pyplot.close(figure)
