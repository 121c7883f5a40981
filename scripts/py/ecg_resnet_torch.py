"""Our PyTorch port of the seed's ECG-age network (ResNet1d), written from the specification in
reference/seed-spec.md section 2. It reproduces the seed's module and buffer names exactly
(`conv1.weight`, `bn1.running_mean`, `resblock1d_{i}.skip_connection.{0,1}.weight`, `lin.bias`,
...), so its state dicts are interchangeable with the published `model.pth` and with our
safetensors checkpoints. Used to generate the parity fixtures (scripts/py/make_model_fixtures.py),
to check that PyTorch accepts our files (scripts/py/check_torch_load.py) and as the benchmark
peer.

    from ecg_resnet_torch import ResNet1d
    model = ResNet1d(input_dim=(12, 4096),
                     blocks_dim=list(zip([64, 128, 196, 256, 320], [4096, 1024, 256, 64, 16])),
                     n_classes=1, kernel_size=17, dropout_rate=0.8)
"""
import torch
from torch import nn


def _padding(downsample, kernel_size):
    """Symmetric zero padding of a convolution with stride `downsample`."""
    return max(0, (kernel_size - downsample + 1) // 2)


def _downsample(n_samples_in, n_samples_out):
    """Integer ratio between the input and output lengths of a layer."""
    downsample = n_samples_in // n_samples_out
    if downsample < 1:
        raise ValueError("number of samples should always decrease")
    if n_samples_in % n_samples_out != 0:
        raise ValueError(
            "number of samples that is not a multiple of the output length is not supported"
        )
    return downsample


class ResBlock1d(nn.Module):
    """One residual block: conv-bn-relu-dropout-conv(stride ds) plus the skip path
    (max-pool of size ds when ds > 1, then a 1x1 conv when the channel count changes); the sum
    is returned as the new skip stream, and bn-relu-dropout of it as the new main stream."""

    def __init__(self, n_filters_in, n_filters_out, downsample, kernel_size, dropout_rate):
        if kernel_size % 2 == 0:
            raise ValueError("kernel size must be odd")
        super().__init__()
        self.conv1 = nn.Conv1d(n_filters_in, n_filters_out, kernel_size,
                               padding=_padding(1, kernel_size), bias=False)
        self.bn1 = nn.BatchNorm1d(n_filters_out)
        self.relu = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout_rate)
        self.conv2 = nn.Conv1d(n_filters_out, n_filters_out, kernel_size, stride=downsample,
                               padding=_padding(downsample, kernel_size), bias=False)
        self.bn2 = nn.BatchNorm1d(n_filters_out)
        self.dropout2 = nn.Dropout(dropout_rate)
        skip = []
        if downsample > 1:
            skip.append(nn.MaxPool1d(downsample, stride=downsample))
        if n_filters_in != n_filters_out:
            skip.append(nn.Conv1d(n_filters_in, n_filters_out, 1, bias=False))
        self.skip_connection = nn.Sequential(*skip) if skip else None

    def forward(self, x, y):
        if self.skip_connection is not None:
            y = self.skip_connection(y)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.dropout1(x)
        x = self.conv2(x)
        x = x + y
        y = x
        x = self.bn2(x)
        x = self.relu(x)
        x = self.dropout2(x)
        return x, y


class ResNet1d(nn.Module):
    """The seed's network: stem conv + batch norm (no activation), one ResBlock1d per entry of
    `blocks_dim` (registered as `resblock1d_{i}`), flatten (channel-major) and a linear head.

    input_dim: (n_leads, n_samples); blocks_dim: list of (n_filters, n_samples) per block."""

    def __init__(self, input_dim, blocks_dim, n_classes, kernel_size=17, dropout_rate=0.8):
        super().__init__()
        blocks_dim = list(blocks_dim)
        n_filters_in, n_filters_out = input_dim[0], blocks_dim[0][0]
        n_samples_in, n_samples_out = input_dim[1], blocks_dim[0][1]
        downsample = _downsample(n_samples_in, n_samples_out)
        self.conv1 = nn.Conv1d(n_filters_in, n_filters_out, kernel_size, bias=False,
                               stride=downsample, padding=_padding(downsample, kernel_size))
        self.bn1 = nn.BatchNorm1d(n_filters_out)
        self.res_blocks = []
        for i, (n_filters, n_samples) in enumerate(blocks_dim):
            n_filters_in, n_filters_out = n_filters_out, n_filters
            n_samples_in, n_samples_out = n_samples_out, n_samples
            downsample = _downsample(n_samples_in, n_samples_out)
            block = ResBlock1d(n_filters_in, n_filters_out, downsample, kernel_size, dropout_rate)
            self.add_module("resblock1d_{0}".format(i), block)
            self.res_blocks.append(block)
        self.lin = nn.Linear(n_filters_out * n_samples_out, n_classes)
        self.n_blk = len(blocks_dim)

    def forward(self, x):
        x = self.conv1(x)
        x = self.bn1(x)
        y = x
        for block in self.res_blocks:
            x, y = block(x, y)
        x = x.reshape(x.size(0), -1)
        return self.lin(x)


def from_config(config):
    """Builds the model from a seed-style `config.json` dict (12 leads, one output)."""
    return ResNet1d(
        input_dim=(12, config["seq_length"]),
        blocks_dim=list(zip(config["net_filter_size"], config["net_seq_lengh"])),
        n_classes=1,
        kernel_size=config["kernel_size"],
        dropout_rate=config["dropout_rate"],
    )


def dropout_paths(model):
    """Module paths of every Dropout module, in registration order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]


if __name__ == "__main__":
    m = ResNet1d((12, 4096), list(zip([64, 128, 196, 256, 320], [4096, 1024, 256, 64, 16])), 1)
    n = sum(p.numel() for p in m.parameters())
    print("parameters:", n, "state-dict entries:", len(m.state_dict()))
    with torch.no_grad():
        print(m.eval()(torch.zeros(2, 12, 4096)).shape)
