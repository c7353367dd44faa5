"""Each architecture's options, declared once (``OPTIONS`` of a model
class): name, type, range or choices, default, help and source.

From the declarations come the model's own options (``resolve``),
train.py's flags (``add_flags``, ``from_flags``), the check of a model
file's options before anything is built (``check``), and what files made
before an option existed hold (``implicit``).
"""
import argparse
import dataclasses
import typing

MAX_SIDE = 64                   # the largest input side a model may take
_NEVER = object()               # an option that files always held


@dataclasses.dataclass(frozen=True)
class Option:
    """One constructor option of a model.

    kind: int, float, bool, str (with ``choices``) or list (class names).
    low, high: the range of a number (``high_open``: high excluded).
    choices: the values a str may take, or a function that gives them when
        asked (the routers registered by then).
    flag: train.py's flag for it; None where the data sets it.
    before: the value that files made before the option existed stand for.
    """

    name: str
    kind: type
    default: typing.Any
    help: str
    source: str = ''
    low: float = None
    high: float = None
    high_open: bool = False
    choices: typing.Any = None
    flag: str = None
    before: typing.Any = _NEVER

    def allowed(self):
        return self.choices() if callable(self.choices) else self.choices

    def wrong(self, value, options):
        """Why ``value`` cannot be this option (``options``: all of the
        model's, for class names), or None."""
        if self.kind is list:                       # names of the classes
            ok = value is None or (
                isinstance(value, list) and
                len(value) == options.get('n_classes') and
                all(isinstance(v, str) for v in value))
            return None if ok else 'must be n_classes names'
        if self.kind is bool:
            return None if isinstance(value, bool) else 'must be true or false'
        if self.kind is str:
            allowed = self.allowed()
            return None if value in allowed else 'must be one of {}'.format(
                ', '.join(allowed))
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and (self.kind is float or float(value).is_integer()) and
              self.low <= value and (value < self.high if self.high_open
                                     else value <= self.high))
        return None if ok else 'must be {} {} in [{}, {}{}'.format(
            'an' if self.kind is int else 'a',
            'integer' if self.kind is int else 'number', self.low, self.high,
            ')' if self.high_open else ']')


def resolve(declared, given):
    """The full options of a model: ``given`` over the declared defaults;
    a name that is not declared is a TypeError, as for a function."""
    names = {option.name for option in declared}
    unknown = set(given) - names
    if unknown:
        raise TypeError('unknown option(s): {}'.format(
            ', '.join(sorted(unknown))))
    return {option.name: given.get(option.name, option.default)
            for option in declared}


def implicit(declared):
    """{name: value} that files made before each option existed stand for."""
    return {option.name: option.before for option in declared
            if option.before is not _NEVER}


def check(declared, options, what='this model'):
    """(name, value, why) of the first option in ``options`` (a model
    file's) that the model cannot be built with, or None; ``what`` names
    the model in the why."""
    by_name = {option.name: option for option in declared}
    for name, value in options.items():
        option = by_name.get(name)
        why = ('is not an option of {}'.format(what) if option is None
               else option.wrong(value, options))
        if why:
            return name, value, why
    return None


def _number(option):
    """An argparse type for a numeric option, from cli's ranges."""
    from capsnet import cli
    return cli.Range(option.kind, option.low, option.high,
                     high_open=option.high_open)


def add_flags(parser, architectures):
    """train.py's flags for every option with one, of all architectures
    (an option declared by several is one flag)."""
    seen = set()
    for architecture in architectures:
        for option in architecture.OPTIONS:
            if not option.flag or option.flag in seen:
                continue
            seen.add(option.flag)
            kwargs = dict(dest=option.name, default=option.default,
                          help=option.help + (' ({})'.format(option.source)
                                              if option.source else ''))
            if option.kind is bool:
                kwargs['action'] = (argparse.BooleanOptionalAction
                                    if option.default else 'store_true')
            elif option.kind is str:
                kwargs['choices'] = option.allowed()
            else:
                kwargs['type'] = _number(option)
            parser.add_argument(option.flag, **kwargs)


def from_flags(architecture, args):
    """The options of ``architecture`` that train.py's flags set."""
    return {option.name: getattr(args, option.name)
            for option in architecture.OPTIONS if option.flag}
