"""A causal convolutional codec (SEANet/Mimi style) around residual vector quantisation.

The decoder streams exactly: every convolution keeps its left context as
state and every transposed convolution keeps its overlap tail, so decoding
frames in chunks with carried state equals decoding them all at once. The
offline decode *is* the streaming decode from zero state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CodecConfig


class CausalConv(nn.Module):
    """Conv1d with left context carried as state: `ctx = (k - 1) * dilation` samples."""

    def __init__(self, cin: int, cout: int, k: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, dilation=dilation)
        self.ctx = (k - 1) * dilation
        self.cin = cin

    def forward(self, x, state):
        """x [B, Cin, T], state [B, Cin, ctx] -> (y [B, Cout, T], new state)."""
        if self.ctx == 0:
            return self.conv(x), state
        xin = torch.cat([state, x], dim=-1)  # [B, Cin, ctx + T]
        return self.conv(xin), xin[..., -self.ctx:]

    def state_shape(self) -> tuple[int, int]:
        return (self.cin, self.ctx)


class CausalConvTranspose(nn.Module):
    """Upsampling by `stride` with kernel 2*stride; the overlap tail is carried as state."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)
        self.stride, self.cout = stride, cout

    def forward(self, x, tail):
        """x [B, Cin, T], tail [B, Cout, stride] -> (y [B, Cout, T*stride], new tail)."""
        y = F.conv_transpose1d(x, self.conv.weight, None, stride=self.stride)  # [B, Cout, T*s + s]
        s = self.stride
        out = torch.cat([y[..., :s] + tail, y[..., s:-s]], dim=-1) + self.conv.bias[:, None]
        return out, y[..., -s:]

    def state_shape(self) -> tuple[int, int]:
        return (self.cout, self.stride)


class ResUnit(nn.Module):
    def __init__(self, ch: int, k: int, dilation: int):
        super().__init__()
        self.conv1 = CausalConv(ch, ch // 2, k, dilation)
        self.conv2 = CausalConv(ch // 2, ch, 1)

    def forward(self, x, state):
        h, state = self.conv1(F.elu(x), state)
        h, _ = self.conv2(F.elu(h), None)
        return x + h, state


class Decoder(nn.Module):
    """Codes -> PCM, streaming. States are a flat list, in `state_shapes()` order."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        chans = [cfg.channels * 2 ** i for i in range(len(cfg.strides) + 1)]  # encoder widths
        self.inp = CausalConv(cfg.latent_dim, chans[-1], cfg.kernel_size)
        self.ups = nn.ModuleList()
        self.res = nn.ModuleList()
        for i, s in enumerate(reversed(cfg.strides)):
            cin, cout = chans[-1 - i], chans[-2 - i]
            self.ups.append(CausalConvTranspose(cin, cout, s))
            self.res.append(ResUnit(cout, cfg.res_kernel_size, 1))
        self.out = CausalConv(chans[0], 1, cfg.kernel_size)

    def stateful(self) -> list[nn.Module]:
        mods = [self.inp]
        for up, res in zip(self.ups, self.res):
            mods += [up, res.conv1]
        return mods + [self.out]

    def state_shapes(self) -> list[tuple[int, int]]:
        """Per state tensor, (channels, length); batch is the leading dim."""
        return [m.state_shape() for m in self.stateful()]

    def zero_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, c, n) for c, n in self.state_shapes()]

    def forward(self, z, states: list):
        """z [B, latent, F] -> (pcm [B, F*hop], new states)."""
        new = []
        x, s = self.inp(z, states[0])
        new.append(s)
        i = 1
        for up, res in zip(self.ups, self.res):
            x, s = up(F.elu(x), states[i])
            new.append(s)
            x, s = res(x, states[i + 1])
            new.append(s)
            i += 2
        x, s = self.out(F.elu(x), states[i])
        new.append(s)
        return torch.tanh(x[:, 0]), new


class Encoder(nn.Module):
    """PCM -> latent frames; strided causal convs (used offline, for voices)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        ch = cfg.channels
        self.inp = nn.Conv1d(1, ch, cfg.kernel_size)
        self.pads = [cfg.kernel_size - 1]
        self.blocks = nn.ModuleList()
        for s in cfg.strides:
            self.blocks.append(nn.ModuleDict({
                "res": ResUnit(ch, cfg.res_kernel_size, 1),
                "down": nn.Conv1d(ch, 2 * ch, 2 * s, stride=s),
            }))
            ch *= 2
        self.out = nn.Conv1d(ch, cfg.latent_dim, 3)

    def forward(self, pcm):
        """pcm [B, N] (N a multiple of hop) -> latent [B, latent, N / hop]."""
        x = self.inp(F.pad(pcm[:, None], (self.pads[0], 0)))
        for blk in self.blocks:
            zero = torch.zeros(x.shape[0], *blk["res"].conv1.state_shape(), dtype=x.dtype)
            x, _ = blk["res"](x, zero)
            s = blk["down"].stride[0]
            x = blk["down"](F.pad(F.elu(x), (s, 0)))
        return self.out(F.pad(F.elu(x), (2, 0)))


class RVQ(nn.Module):
    """Residual vector quantisation with K codebooks of size C."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.codebooks = nn.Parameter(torch.randn(cfg.n_codebooks, cfg.codebook_size, cfg.latent_dim))

    def encode(self, z):
        """z [B, latent, F] -> codes [B, K, F] (int64)."""
        r = z.transpose(1, 2)  # [B, F, latent]
        codes = []
        for cb in self.codebooks:  # [C, latent]
            d = (cb * cb).sum(-1) - 2 * r @ cb.t()  # [B, F, C] (|r|^2 dropped: same argmin)
            idx = d.argmin(-1)  # [B, F]
            codes.append(idx)
            r = r - cb[idx]
        return torch.stack(codes, dim=1)

    def decode(self, codes):
        """codes [B, K, F] -> z [B, latent, F]."""
        z = 0
        for k, cb in enumerate(self.codebooks):
            z = z + F.embedding(codes[:, k], cb)  # [B, F, latent]
        return z.transpose(1, 2)


class Codec(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.quantizer, self.decoder = Encoder(cfg), RVQ(cfg), Decoder(cfg)

    def encode(self, pcm):
        """pcm [B, N] -> codes [B, K, N // hop]; N is cut to whole frames."""
        n = pcm.shape[-1] // self.cfg.hop * self.cfg.hop
        return self.quantizer.encode(self.encoder(pcm[..., :n]))

    def decode_stream(self, codes, states):
        """codes [B, K, F] + states -> (pcm [B, F*hop], new states)."""
        return self.decoder(self.quantizer.decode(codes), states)

    def decode(self, codes):
        """Offline decode of all frames: the streaming decode from zero state."""
        return self.decode_stream(codes, self.decoder.zero_state(codes.shape[0]))[0]


class SpeakerEncoder(nn.Module):
    """PCM -> an L2-normalised voice embedding [B, E].

    A learned filterbank (strided conv, no bias) gives log band energies, which are
    pooled over time (mean and std) and centred across bands, so the embedding
    follows the spectral shape of the voice rather than its level. Random weights
    keep that property: different voices give clearly different directions.
    """

    def __init__(self, channels: int, dim: int):
        super().__init__()
        c = channels
        self.filterbank = nn.Conv1d(1, 2 * c, 400, stride=240, bias=False)  # ~17 ms windows, 10 ms hop
        self.mix = nn.Conv1d(2 * c, 2 * c, 3, bias=False)
        nn.init.normal_(self.filterbank.weight, 0.0, 1.0 / 20)
        self.proj = nn.Linear(4 * c, dim, bias=False)

    def forward(self, pcm):
        bands = torch.log(self.filterbank(pcm[:, None]).pow(2) + 1e-6)  # [B, 2C, T']
        x = self.mix(bands)  # [B, 2C, T'-2]
        stats = torch.cat([x.mean(-1), x.std(-1)], dim=-1)  # [B, 4C]
        stats = stats - stats.mean(-1, keepdim=True)  # level-free
        e = self.proj(stats)
        return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-6)
