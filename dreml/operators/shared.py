"""One pass over the genotypes for the concurrent requests of several fits.

T fits (one per trait) run at once, each in its own thread, each through its own
`SharedMember` of one `SharedPasses`. A member's `matmat` blocks until every fit still
running has a request waiting (or has finished); the last request to arrive runs one
stacked pass of the underlying operator on all requested columns side by side,

    [K_g [V_1 | V_2 | ... | V_T]]_g,   shape (G, n, sum_t k_t),

and hands each fit its columns, combined with its own weights where it asked for a weighted
product (sum_g theta_gt K_g V_t). The shards are read and decoded once per round instead of
once per fit; the GEMMs still grow with the number of columns. Passes are counted per member
(the rounds it took part in) and in total (`SharedPasses.passes`): T fits take as many rounds
as the longest of them needs.

Traits observed on different samples run on `RestrictedOperator(member, rows_t)`: the
padding by zeros happens inside each fit, so columns of different sample sets share the pass.
"""

from __future__ import annotations

import threading

import numpy as np

from dreml.operators.protocol import GRMOperator, as_block, with_diagonal


class SharedPasses:
    """The round-robin of `parties` fits over `operator` (module docstring).

    Arguments:
        operator: a genotype (or dense) operator with stacked `matmat(V)` -> (G, n, k).
        parties: the number of members (fits) that will take part; each must call
            `SharedMember.leave()` when its fit ends, or the others wait for it.
    """

    def __init__(self, operator: GRMOperator, parties: int) -> None:
        if parties < 1:
            raise ValueError(f"parties must be at least 1, got {parties}")
        self.operator = operator
        self.live = parties
        self.passes = 0
        self._cond = threading.Condition()
        self._pending: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._results: dict[int, np.ndarray | BaseException] = {}
        self._members = [SharedMember(self, t) for t in range(parties)]

    def member(self, t: int) -> SharedMember:
        """The operator of fit `t` (0 <= t < parties)."""
        return self._members[t]

    def _request(self, t: int, V: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        with self._cond:
            self._pending[t] = (V, weights)
            self._run_if_complete()
            while t not in self._results:
                self._cond.wait()
            out = self._results.pop(t)
        if isinstance(out, BaseException):
            raise out
        return out

    def _leave(self) -> None:
        with self._cond:
            self.live -= 1
            self._run_if_complete()

    def _run_if_complete(self) -> None:
        """Run the round once every live member is waiting (called with the lock held)."""
        if not self._pending or len(self._pending) < self.live:
            return
        requests, self._pending = self._pending, {}
        try:
            stacked = np.asarray(self.operator.matmat(np.hstack([V for V, _ in requests.values()])), dtype=np.float64)
            self.passes += 1
            start = 0
            for t, (V, weights) in requests.items():
                part = stacked[:, :, start : start + V.shape[1]]
                start += V.shape[1]
                self._results[t] = part if weights is None else np.tensordot(weights, part, axes=1)
                self._members[t].passes += 1
        except BaseException as exc:  # every waiting fit learns of the failure
            for t in requests:
                self._results[t] = exc
        self._cond.notify_all()


class SharedMember:
    """One fit's view of a `SharedPasses`: the operator protocol over all its samples."""

    def __init__(self, shared: SharedPasses, index: int) -> None:
        self._shared, self.index = shared, index
        self.passes = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self._shared.operator.shape

    @property
    def n_components(self) -> int:
        return self._shared.operator.n_components

    @property
    def component_names(self) -> tuple[str, ...]:
        return self._shared.operator.component_names

    def traces(self) -> np.ndarray:
        return np.asarray(with_diagonal(self._shared.operator).traces())

    def diagonal(self) -> np.ndarray:
        return np.asarray(with_diagonal(self._shared.operator).diagonal())

    def matmat(self, V: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        block, vector = as_block(V, self.shape[0])
        w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        out = self._shared._request(self.index, np.asarray(block, dtype=np.float64), w)
        return out[..., 0] if vector else out

    def leave(self) -> None:
        """This fit makes no more requests (call once, when it ends, also on failure)."""
        self._shared._leave()
