"""Reinforcement-learning agents for the trading task (paper Table 3), from stable-baselines3.

* DQN, SAC, PPO "on raw features": an MLP policy over the flattened feature window of the stock
  (:func:`storm_lib.trading.observations.feature_windows`) plus the position flag. SAC acts through
  :class:`~storm_lib.trading.env.ContinuousActionWrapper` (thirds of [−1, 1] → sell / hold / buy).
* STORM (and its two ablations): PPO over the factor tokens
  (:func:`~storm_lib.trading.observations.factor_tokens`) with :class:`TokenExtractor`, the official
  network's shape (reference/official-code.md §8): a per-token MLP scores each token, the token scores
  (plus the position flag) feed small actor and critic heads.

Checkpoint choice on the validation span (:class:`ValidationCheckpoint`): every ``eval_every`` steps the
greedy policy trades the whole validation span; the weights with the best validation Sharpe ratio
(``select="asr"``, standard annualised; or ``"cw"``, final wealth) are restored at the end. The
official code evaluates on the test span (its valid = test) and has no selection rule.

Training rewards: the env's daily return, multiplied by ``reward_scale`` for SAC (100, i.e. percent):
with rewards of about 1e-2 SAC's entropy bonus outweighs every Q-value difference and its mean action
never leaves the "hold" third (measured: no trade at any checkpoint in 20,000 steps on any of the five
stocks). Evaluation and all metrics use the env's unscaled returns.

Budgets (:data:`BUDGETS`) are per profile. ``cpu`` keeps one agent within about 3 minutes on a 2-core
machine (measured in benchmarks/RESULTS.md); the official PPO runs 1e8 environment steps, ``paper``
keeps that number for PPO and gives DQN / SAC 1e6 (the paper states no budget for them).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pandas as pd
import torch
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn
from tqdm.auto import tqdm

from ..metrics import portfolio_metrics
from .env import ContinuousActionWrapper, TradingEnv, run_policy

ALGOS = ("dqn", "sac", "ppo")

#: per profile and algorithm: environment steps, validation every ``eval_every`` steps, parallel envs
BUDGETS: dict[str, dict[str, dict]] = {
    "smoke": {
        "ppo": dict(timesteps=1_024, eval_every=512, n_envs=2, n_steps=64),
        "dqn": dict(timesteps=600, eval_every=300, learning_starts=100, buffer_size=1_000),
        "sac": dict(timesteps=300, eval_every=150, learning_starts=100, buffer_size=1_000, reward_scale=100.0),
    },
    "cpu": {
        "ppo": dict(timesteps=51_200, eval_every=5_120, n_envs=4, n_steps=128),
        "dqn": dict(timesteps=50_000, eval_every=5_000, learning_starts=1_000, buffer_size=20_000),
        "sac": dict(timesteps=20_000, eval_every=2_000, learning_starts=1_000, buffer_size=20_000,
                    train_freq=4, reward_scale=100.0),
    },
    "paper": {
        "ppo": dict(timesteps=100_000_000, eval_every=10_000, n_envs=4, n_steps=128),
        "dqn": dict(timesteps=1_000_000, eval_every=10_000, learning_starts=10_000, buffer_size=200_000),
        "sac": dict(timesteps=1_000_000, eval_every=10_000, learning_starts=10_000, buffer_size=200_000,
                    reward_scale=100.0),
    },
}


def budget(algo: str, profile: str) -> dict:
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; use one of {ALGOS}")
    name = getattr(profile, "name", profile)
    if name not in BUDGETS:
        raise ValueError(f"no trading budget for profile {name!r}; known: {', '.join(BUDGETS)}")
    return dict(BUDGETS[name][algo])


class TokenExtractor(BaseFeaturesExtractor):
    """Per-token MLP over factor tokens, as the official trading network (official-code.md §8).

    Input: the flattened (L, D) tokens, with the position flag as last entry when ``position=True``.
    Each token → Linear(D, h) → Tanh → Linear(h, h) → Tanh → LayerNorm → Linear(h, 1); the L token scores
    (plus the flag) are the features (dimension L [+ 1]) that SB3's actor and critic heads read.
    """

    def __init__(self, observation_space: gym.spaces.Box, token_shape: tuple[int, int], hidden: int = 64,
                 position: bool = True):
        L, D = token_shape
        super().__init__(observation_space, features_dim=L + int(position))
        expected = L * D + int(position)
        if int(np.prod(observation_space.shape)) != expected:
            raise ValueError(f"observation has {np.prod(observation_space.shape)} entries, tokens {token_shape}"
                             f"{' + flag' if position else ''} need {expected}")
        self.L, self.D, self.position = L, D, position
        self.token = nn.Sequential(nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                   nn.LayerNorm(hidden), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.reshape(obs.shape[0], -1)
        tokens = obs[:, : self.L * self.D].reshape(-1, self.L, self.D)
        scores = self.token(tokens).squeeze(-1)                       # (B, L)
        return torch.cat([scores, obs[:, -1:]], 1) if self.position else scores


def score_returns(returns: pd.Series, select: str = "asr") -> float:
    """Validation score of a daily return series: annualised Sharpe (``asr``, 0 when flat) or final wealth."""
    r = pd.Series(returns, dtype=float)
    if select == "cw":
        return float(np.prod(1.0 + r.to_numpy()))
    if select != "asr":
        raise ValueError(f"select must be 'asr' or 'cw', got {select!r}")
    if len(r) < 2 or r.std(ddof=1) < 1e-12:
        return 0.0
    return float(portfolio_metrics(r, "standard")["ASR"])


class ValidationCheckpoint(BaseCallback):
    """Every ``every`` steps (and at the end) trade the validation env greedily; keep the best weights."""

    def __init__(self, valid_env: gym.Env, every: int, select: str = "asr"):
        super().__init__()
        self.valid_env, self.every, self.select = valid_env, int(every), select
        self.best_score, self.best_step, self.best_state = -np.inf, None, None
        self.log: list[dict] = []
        self._next = self.every

    def evaluate(self) -> None:
        h = run_policy(self.valid_env, self.model, deterministic=True)
        score = score_returns(h["reward"], self.select)
        self.log.append({"step": int(self.num_timesteps), "valid_score": score,
                         "valid_cw": float(np.prod(1.0 + h["reward"].to_numpy())),
                         "valid_exposure": float((h["shares"] > 0).mean()),
                         "valid_trades": int((h["executed"] != 1).sum())})
        if score > self.best_score:
            self.best_score, self.best_step = score, int(self.num_timesteps)
            self.best_state = copy.deepcopy(self.model.policy.state_dict())

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        if not self.log or self.log[-1]["step"] != self.num_timesteps:
            self.evaluate()


class _Progress(BaseCallback):
    def __init__(self, total: int, desc: str, disable: bool):
        super().__init__()
        self.bar = tqdm(total=total, desc=desc, disable=disable, leave=False, mininterval=1.0)

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


@dataclass
class TrainedAgent:
    """A fitted agent with its best-on-validation weights loaded."""

    algo: str
    model: object            # the stable-baselines3 model
    log: pd.DataFrame        # one row per validation evaluation
    best_step: int
    seconds: float
    timesteps: int

    def act_env(self, env: gym.Env) -> gym.Env:
        """``env`` wrapped as the agent needs it (SAC: continuous actions)."""
        return ContinuousActionWrapper(env) if self.algo == "sac" else env

    def trade(self, env: TradingEnv) -> pd.DataFrame:
        """Greedy run over an eval-mode env; its per-step history."""
        return run_policy(self.act_env(env), self.model, deterministic=True)


def train_agent(
    algo: str,
    make_train_env,
    valid_env: TradingEnv,
    *,
    seed: int = 0,
    profile: str = "cpu",
    token_shape: tuple[int, int] | None = None,
    select: str = "asr",
    progress: bool = True,
    device: str | None = "cpu",
    **overrides,
) -> TrainedAgent:
    """Train ``algo`` ("dqn" | "sac" | "ppo") and restore its best-on-validation weights.

    ``make_train_env(i)`` returns the i-th train-mode :class:`TradingEnv` (PPO runs ``n_envs`` of them in a
    ``DummyVecEnv``, reset with seeds ``seed + i``); ``valid_env`` is an eval-mode env over the validation
    span. ``token_shape=(L, D)`` switches the policy to :class:`TokenExtractor` (STORM factor tokens).
    ``overrides`` replace entries of :func:`budget` (timesteps, eval_every, ...) or SB3 keyword arguments.
    ``device``: ``"cpu"`` (default: these small networks gain nothing from a GPU), ``None`` for CUDA when
    present; CPU threads follow ``$STORM_NUM_THREADS``.
    """
    from ..utils import pick_device

    device = str(pick_device(device))  # also applies $STORM_NUM_THREADS (SB3 would use every core)
    cfg = {**budget(algo, profile), **overrides}
    timesteps, every = int(cfg.pop("timesteps")), int(cfg.pop("eval_every"))
    n_envs = int(cfg.pop("n_envs", 1))
    scale = float(cfg.pop("reward_scale", 1.0))
    wrap = ContinuousActionWrapper if algo == "sac" else (lambda e: e)

    def train_env(i):
        env = wrap(make_train_env(i))
        return env if scale == 1.0 else gym.wrappers.TransformReward(env, lambda r: scale * r)

    envs = DummyVecEnv([(lambda i=i: train_env(i)) for i in range(n_envs)])
    envs.seed(seed)

    policy_kwargs: dict = {"net_arch": [64, 64]}
    if token_shape is not None:
        if algo != "ppo":
            raise ValueError("factor tokens are used with PPO (the STORM agent)")
        policy_kwargs = {"features_extractor_class": TokenExtractor,
                         "features_extractor_kwargs": {"token_shape": tuple(token_shape)},
                         "net_arch": {"pi": [64], "vf": [64]}}
    common = dict(policy_kwargs=policy_kwargs, seed=seed, device=device, verbose=0)
    if algo == "ppo":
        # rollout of 4 envs x 128 steps, gamma, GAE lambda, clip, entropy and grad norm as the official
        # PPO (official-code.md §8); lr 3e-4 and 4 epochs of minibatch 64 instead of its 5e-5 / 1e-5 and
        # one epoch, which learn nothing within a CPU budget 2,500x smaller than its 1e8 steps
        kw = dict(learning_rate=3e-4, n_steps=128, batch_size=64, n_epochs=4, gamma=0.99, gae_lambda=0.95,
                  clip_range=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5)
        model = PPO("MlpPolicy", envs, **{**kw, **cfg}, **common)
    elif algo == "dqn":
        kw = dict(learning_rate=1e-4, buffer_size=20_000, learning_starts=1_000, batch_size=64, gamma=0.99,
                  train_freq=4, target_update_interval=1_000, exploration_fraction=0.3,
                  exploration_final_eps=0.05)
        model = DQN("MlpPolicy", envs, **{**kw, **cfg}, **common)
    else:
        kw = dict(learning_rate=3e-4, buffer_size=15_000, learning_starts=1_000, batch_size=64, gamma=0.99,
                  train_freq=1, gradient_steps=1)
        model = SAC("MlpPolicy", envs, **{**kw, **cfg}, **common)

    model.set_logger(Logger(None, []))  # no log folder per agent (SB3's default writes one under /tmp)
    checkpoint = ValidationCheckpoint(wrap(valid_env), every, select)
    bar = _Progress(timesteps, f"{algo} ({timesteps:,} steps)", not progress)
    t0 = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=CallbackList([checkpoint, bar]))
    seconds = time.perf_counter() - t0
    model.policy.load_state_dict(checkpoint.best_state)
    return TrainedAgent(algo, model, pd.DataFrame(checkpoint.log), int(checkpoint.best_step), seconds, timesteps)
