"""Solvers as `caffe_pb2.SolverParameter`: build in Python, write as prototxt, read back.

    s = make_solver(train_net="models/q1/.../train_val.prototxt", base_lr=0.01, max_iter=3000,
                    test_iter=[40], test_interval=100, snapshot_prefix="results/q1/.../snap")
    write_solver(s, "models/q1/.../solver.prototxt")
"""

from pathlib import Path

from google.protobuf import text_format

from tools.fileio import write_text


def _caffe_pb2():
    from caffe.proto import caffe_pb2  # late import: setup checks run before pycaffe exists

    return caffe_pb2


def make_solver(**fields):
    """A SolverParameter from keyword fields; repeated fields take lists, enums take their names.

    `test_state` takes a list of dicts such as {"stage": ["val"]}.
    """
    pb2 = _caffe_pb2()
    s = pb2.SolverParameter()
    for name, value in fields.items():
        if value is None:
            continue
        if name == "test_state":
            for state in value:
                s.test_state.add().CopyFrom(text_format.Parse(_state_text(state), pb2.NetState()))
        elif name == "solver_mode":
            s.solver_mode = pb2.SolverParameter.SolverMode.Value(value) if isinstance(value, str) else value
        elif isinstance(value, (list, tuple)):
            getattr(s, name).extend(value)
        else:
            setattr(s, name, value)
    return s


def _state_text(state: dict) -> str:
    out = []
    for k, v in state.items():
        for item in v if isinstance(v, (list, tuple)) else [v]:
            out.append(f'{k}: "{item}"' if isinstance(item, str) and k != "phase" else f"{k}: {item}")
    return "\n".join(out)


def solver_text(solver) -> str:
    return text_format.MessageToString(solver)


def write_solver(solver, path) -> Path:
    return write_text(path, solver_text(solver))


def read_solver(path):
    """Parse a solver.prototxt; a syntax error names the file and the line."""
    pb2 = _caffe_pb2()
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"solver file not found: {path}") from None
    s = pb2.SolverParameter()
    try:
        text_format.Parse(text, s)
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a valid SolverParameter: {e}") from None
    return s
