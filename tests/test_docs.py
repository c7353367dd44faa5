"""README.md and docs/: every relative link and image resolves, and every
command names flags that its script's own parser accepts."""
import glob
import os
import re
import shlex

import pytest

from conftest import ROOT
from conftest import script_module

PAGES = [os.path.join(ROOT, 'README.md')] + sorted(
    glob.glob(os.path.join(ROOT, 'docs', '*.md')))
SCRIPTS = ['train.py', 'analyze.py', 'experiments/grid.py',
           'experiments/shapes.py',
           'experiments/multimnist_gap.py', 'experiments/curve.py',
           'capsnet/doubt.py',
           'bench/benchmark.py', 'bench/side_by_side.py',
           'bench/convolution.py', 'capsnet/export.py']
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def page_id(path):
    return os.path.relpath(path, ROOT)


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_every_relative_link_and_image_resolves(page):
    text = open(page).read()
    targets = [t for t in LINK.findall(text)
               if not re.match(r'(https?|mailto):|#', t)]
    missing = [t for t in targets if not os.path.exists(os.path.join(
        os.path.dirname(page), t.split('#')[0]))]
    assert not missing, missing


def commands(text):
    """Every line of a fenced code block, and every inline code span."""
    blocks = re.findall(r'```[a-z]*\n(.*?)```', text, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    spans = re.findall(r'`([^`\n]+)`', re.sub(r'```.*?```', '', text,
                                               flags=re.S))
    return lines + spans


def flags_of_scripts(command):
    """(script, [flag, ...]) for each script the command runs."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return []
    # python -m capsnet.export runs capsnet/export.py
    words = [w.replace('.', '/') + '.py' if k and words[k - 1] == '-m' else w
             for k, w in enumerate(words)]
    found = []
    for k, word in enumerate(words):
        script = next((s for s in SCRIPTS if word == s or
                       word.endswith('/' + s)), None)
        if script:
            rest = words[k + 1:]
            if '|' in rest:
                rest = rest[:rest.index('|')]
            flags = [w.strip('[]').split('=')[0] for w in rest
                     if w.strip('[').startswith('-') and
                     not re.fullmatch(r'-\d+(\.\d*)?', w)]
            found.append((script, flags))
    return found


def test_the_walk_finds_commands_and_their_flags():
    assert flags_of_scripts('.venv/bin/python train.py -g 0 --save x '
                            '[--affine] # --not-a-flag') == [
        ('train.py', ['-g', '--save', '--affine'])]
    assert flags_of_scripts('python -m capsnet.export a b --float16') == [
        ('capsnet/export.py', ['--float16'])]


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_every_command_names_flags_its_script_accepts(page):
    parsers = {}
    checked, unknown = 0, []
    for command in commands(open(page).read()):
        for script, flags in flags_of_scripts(command):
            if script not in parsers:
                parsers[script] = script_module(
                    script).build_parser()._option_string_actions
            checked += 1
            unknown += ['{}: {}'.format(script, f) for f in flags
                        if f not in parsers[script]]
    assert not unknown, unknown
    if os.path.basename(page) in ('README.md', 'training.md', 'speed.md'):
        assert checked > 3            # the walk saw this page's commands


def paths_outside(command):
    """The words of a command that name a path in the temporary directory
    or outside the repository (DIR-like placeholders are fine)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    outside = []
    for k, word in enumerate(words):
        if k and words[k - 1] in ('GET', 'POST'):
            continue                    # a route of the explorer's server
        for path in re.split(r'[=:"\'()]', word):
            if re.match(r'(https?|file|mailto)$', path):
                break                   # a URL, not a path
            if (path.startswith('/') and path not in ('/', '//')) or \
                    re.search(r'(^|/)\.\.(/|$)', path):
                outside.append(word)
                break
    return outside


def test_the_path_walk_finds_temporary_and_outside_paths():
    assert paths_outside('git worktree add /tmp/before f0d57bf') == [
        '/tmp/before']
    assert paths_outside('train.py --data-dir ../shared/data/mnist') == [
        '../shared/data/mnist']
    assert paths_outside('x --reference "$root/../shared/b.py -b 1"') == [
        '$root/../shared/b.py -b 1']
    assert paths_outside('python bench/side_by_side.py --reference '
                         '"python DIR/bench/benchmark.py"') == []
    assert paths_outside('train.py --data-dir DIR --save runs/a') == []
    assert paths_outside('POST /capsules') == []


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_no_command_names_a_path_outside_the_repository(page):
    """A reader has a clone: commands name folders in it, or DIR-like
    placeholders, never this machine's temporary or sibling folders."""
    found = [(command, paths_outside(command))
             for command in commands(open(page).read())
             if paths_outside(command)]
    assert not found, found
