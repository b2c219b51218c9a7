"""
====================================================
Sparse features of a small transformer's activations
====================================================

Sparse autoencoders are trained on a network's activations to split them
into features that each mean one thing. :func:`skae.activations.harvest`
collects the activations of any layer of any ``torch.nn.Module`` into an
``.npy`` file that the estimators fit by streaming it. This example trains a
tiny transformer for a few seconds on a synthetic task, harvests its
residual stream, fits a :class:`~skae.KSparseAutoencoder` to it, and uses
:func:`skae.inspect.top_activating` to see what single latents respond to.
"""

# %%
# A task that needs attention
# ---------------------------
# Sequences of 16 tokens drawn from 10. At every position the model says
# whether the token there has already appeared earlier in the sequence: it
# has to look back, so the answer is not in the token alone.
import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from skae import KSparseAutoencoder
from skae.activations import harvest
from skae.inspect import top_activating

n_tokens, length, width = 10, 16, 32


def sequences(n, generator):
    tokens = torch.randint(n_tokens, (n, length), generator=generator)
    same = tokens[:, :, None] == tokens[:, None, :]
    earlier = torch.ones(length, length, dtype=torch.bool).tril(-1)
    repeated = (same & earlier).any(dim=2)
    return tokens, repeated.long()


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(n_tokens, width)
        self.position = nn.Parameter(0.1 * torch.randn(length, width))
        layer = nn.TransformerEncoderLayer(
            width, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(width, 2)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens) + self.position))


torch.manual_seed(0)
generator = torch.Generator().manual_seed(0)
model = TinyTransformer()
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
began = time.perf_counter()
for _ in range(300):
    tokens, repeated = sequences(128, generator)
    loss = nn.functional.cross_entropy(model(tokens).reshape(-1, 2), repeated.ravel())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
tokens, repeated = sequences(1000, generator)
with torch.no_grad():
    accuracy = (model(tokens).argmax(-1) == repeated).float().mean()
seconds = time.perf_counter() - began
print(f"trained in {seconds:.1f} s; held-out accuracy {accuracy:.3f}")

# %%
# Harvesting the residual stream
# ------------------------------
# The output of the first encoder layer, ``'encoder.layers.0'`` in
# ``model.named_modules()``, for 1000 new sequences in batches of 100. Each
# sequence gives one row per position, 16,000 rows of 32 features; the model
# stops after that layer, and the file is written as it goes, so a harvest
# far larger than memory works the same way (and resumes if interrupted).
folder = tempfile.mkdtemp()
batches = [tokens[i : i + 100] for i in range(0, len(tokens), 100)]
X = harvest(model, "encoder.layers.0", batches, os.path.join(folder, "resid.npy"))
print(f"harvested {X.shape} into {os.path.basename(X.filename)}")

# Row r is position r % 16 of sequence r // 16.
token_of_row = tokens.numpy().ravel()
repeated_of_row = repeated.numpy().ravel().astype(bool)

# %%
# A sparse autoencoder on the activations
# ---------------------------------------
# 128 latents, 4 active per row, at the estimator's defaults otherwise. It
# streams the memmap from disk.
sae = KSparseAutoencoder(n_components=128, k=4, random_state=0).fit(X)
print(f"explained variance {sae.score(X):.3f}, dead latents {sae.n_dead_components_}")

# %%
# What single latents respond to
# ------------------------------
# For each latent, the 50 rows that excite it most. A latent whose top rows
# all hold the same token reads the token; one whose top rows are nearly all
# repeats (or all first occurrences) of several different tokens carries the
# answer that the model computed by attention.
live = np.flatnonzero(sae.activation_frequency_ > 0.001)
rows, _ = top_activating(sae, X, latent=live, n=50)
counts = np.array([np.bincount(token_of_row[r], minlength=n_tokens) for r in rows])
token_share = counts.max(axis=1) / rows.shape[1]
repeat_share = repeated_of_row[rows].mean(axis=1)
repeat_purity = np.maximum(repeat_share, 1 - repeat_share)


def show(title, order):
    print(title)
    print(f"{'latent':>8} {'top token':>10} {'its share':>10} {'repeats':>8}")
    for i in order[:5]:
        print(
            f"{live[i]:>8} {counts[i].argmax():>10} {token_share[i]:>10.2f} "
            f"{repeat_share[i]:>8.2f}"
        )


show("Token readers:", np.argsort(-token_share, kind="stable"))
mixed = np.flatnonzero(token_share < 0.6)
show("\nAcross tokens:", mixed[np.argsort(-repeat_purity[mixed], kind="stable")])

# %%
# Among all rows about half are repeats, and each token is about a tenth;
# the latents above are far purer than either. The first kind reads the
# token in the residual stream; the second fires for repeats (share near 1)
# or for first occurrences (near 0) of different tokens: it carries the
# "seen before" answer, which exists nowhere in the input and which the
# first layer computed by attention. The plot places every live latent by
# the two purities (the gray lines are the base rates).
fig, ax = plt.subplots(figsize=(6, 5))
ax.scatter(token_share, repeat_purity, s=15)
ax.axhline(max(repeated_of_row.mean(), 1 - repeated_of_row.mean()), color="gray", lw=1)
ax.axvline(1 / n_tokens, color="gray", lw=1)
ax.set_xlabel("share of the most common token in a latent's top 50 rows")
ax.set_ylabel("share of repeats (or first occurrences) in them")
ax.set_title("What each live latent's strongest rows have in common")
plt.show()
