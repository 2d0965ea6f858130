"""certify.models.structure: a module cycle is refused naming its path; a shared submodule (a DAG) is not."""
import pytest
from torch import nn

from certify.errors import UnsupportedError
from certify.models.hashing import model_hash
from certify.models.structure import require_acyclic


def test_a_cycle_is_refused_with_its_path_and_a_shared_submodule_is_not():
    shared = nn.Linear(2, 2)
    dag = nn.Sequential(shared, nn.ReLU(), shared)
    require_acyclic(dag)
    model_hash(dag)
    looped = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    looped[1].back = looped
    for call in (require_acyclic, model_hash):
        with pytest.raises(UnsupportedError, match=r"cycle \(Sequential\.1\.back is Sequential again\)"):
            call(looped)
    self_loop = nn.Module()
    self_loop.me = self_loop
    with pytest.raises(UnsupportedError, match="cycle"):
        require_acyclic(self_loop)
