"""Model registry: the custom CNN, torchvision's ResNet-18 and the fully-connected ResFCN-18.

Every model built by :func:`create_model` carries the same attributes, so training, checkpoints and the app can
treat them alike:

- ``architecture``: the registry name (one of :data:`MODEL_NAMES`);
- ``image_size``: the square input side in pixels the model was built for;
- ``fixed_input_size``: True when the model accepts only ``image_size`` (the fully-connected network);
- ``prefers_channels_last``: True for convolutional networks, which run faster in ``torch.channels_last``.

Each model checks the spatial size of its input in ``forward`` and raises a ``ValueError`` that names the expected
and the found size, instead of failing deep inside a layer with a shape error.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights
from torchvision.models.resnet import BasicBlock, ResNet

logger = logging.getLogger(__name__)

MODEL_NAMES: tuple[str, ...] = ("custom_cnn", "resnet18", "resfcn18")
MODEL_FAMILY: dict[str, str] = {"custom_cnn": "cnn", "resnet18": "cnn", "resfcn18": "fcn"}

# Input sizes small enough to train on a laptop CPU. Pass image_size to create_model to override them.
DEFAULT_IMAGE_SIZE: dict[str, int] = {"custom_cnn": 64, "resnet18": 128, "resfcn18": 64}

# Smallest input side per architecture. The five 2x2 poolings of custom_cnn and the 32x downsampling of
# ResNet-18 both reduce a 32 px image to a 1x1 map. ResFCN-18 needs a multiple of 8 (see check_image_size).
MIN_IMAGE_SIZE: dict[str, int] = {"custom_cnn": 32, "resnet18": 32, "resfcn18": 8}

# Largest weight matrix allowed for the ResFCN-18 stem (in_features x out_features). At S pixels the stem has
# (3*S*S) * (3*S*S/8) weights: 96 px gives 27,648 x 3,456 = 95.6 M (382 MB in float32); 104 px would give 131.6 M.
MAX_STEM_PARAMETERS = 100_000_000

CUSTOM_CNN_WIDTHS: tuple[int, ...] = (32, 64, 128, 256, 512)

IMAGENET_OVERLAP_WARNING = (
    "resnet18 starts from ImageNet weights. The Stanford Dogs photos were taken from ImageNet, so the network may "
    "have seen the validation and test photos during pretraining. Its accuracy on Stanford Dogs is therefore "
    "optimistic and not comparable with models trained from scratch."
)


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that could not be downloaded or read from the torch hub cache."""


class _CheckedInput:
    """Input-size validation shared by every model in the registry."""

    architecture: str
    image_size: int
    fixed_input_size: bool
    prefers_channels_last: bool

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{self.architecture} expects a batch of RGB images shaped [N, 3, H, W]; found shape "
                f"{list(x.shape)}. Add a batch dimension with x.unsqueeze(0) or convert the image to RGB."
            )

        height, width = int(x.shape[-2]), int(x.shape[-1])
        if self.fixed_input_size:
            if (height, width) != (self.image_size, self.image_size):
                raise ValueError(
                    f"{self.architecture} was built for {self.image_size}x{self.image_size} images; found "
                    f"{height}x{width}. Preprocess images to {self.image_size} px or build the model for "
                    f"image_size={height}."
                )
            return

        minimum = MIN_IMAGE_SIZE[self.architecture]
        if height < minimum or width < minimum:
            raise ValueError(
                f"{self.architecture} needs images of at least {minimum}x{minimum} pixels; found "
                f"{height}x{width}. Resize the images to {minimum} px or more."
            )


class CustomCNN(_CheckedInput, nn.Module):
    """Five-block VGG-style CNN (3x3 conv, batch norm, ReLU, 2x2 average pool) with a global-pool MLP head."""

    def __init__(self, num_classes: int, image_size: int = 64, widths: tuple[int, ...] = CUSTOM_CNN_WIDTHS) -> None:
        super().__init__()
        check_image_size("custom_cnn", image_size)
        self.architecture = "custom_cnn"
        self.image_size = image_size
        self.fixed_input_size = False
        self.prefers_channels_last = True

        blocks = []
        in_channels = 3
        for out_channels in widths:
            blocks.append(_conv_block(in_channels, out_channels))
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)

        # Global average pooling makes the head independent of the input size.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(in_channels, 256)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)

        x = self.features(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = self.relu(x)
        x = self.fc(x)

        return x


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # The convolution has no bias because the batch norm right after it subtracts the mean anyway.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
    )


class ResNet18(_CheckedInput, ResNet):
    """torchvision's ResNet-18 (He et al., 2015) with an input-size check and the classifier sized to the classes."""

    def __init__(self, num_classes: int, image_size: int = 128) -> None:
        check_image_size("resnet18", image_size)
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.architecture = "resnet18"
        self.image_size = image_size
        self.fixed_input_size = False
        self.prefers_channels_last = True

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)

        return self._forward_impl(x)


class ResidualLinearBlock(nn.Module):
    """Fully-connected analogue of ResNet's BasicBlock: two Linear + BatchNorm1d layers around an identity path."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        halves = in_features % 2 == 0 and out_features == in_features // 2
        if out_features != in_features and not halves:
            raise ValueError(
                f"ResidualLinearBlock keeps or halves an even width; found {in_features} -> {out_features}."
            )

        # No bias before batch norm, as in torchvision's ResNet convolutions.
        self.fc1 = nn.Linear(in_features, out_features, bias=False)
        self.bn1 = nn.BatchNorm1d(out_features)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(out_features, out_features, bias=False)
        self.bn2 = nn.BatchNorm1d(out_features)

        # Halving blocks average neighbouring features on the identity path: length L -> ceil(L / 2) = L / 2.
        self.downsample = nn.AvgPool1d(kernel_size=3, stride=2, padding=1) if out_features != in_features else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.fc1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.fc2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            # AvgPool1d works on [N, C, L]; the flattened features are one channel of length L.
            identity = self.downsample(x.unsqueeze(1)).squeeze(1)

        out = out + identity
        out = self.relu(out)

        return out


class ResFCN18(_CheckedInput, nn.Module):
    """Fully-connected residual network with ResNet-18's 18 weight layers, applied to the flattened image."""

    def __init__(self, num_classes: int, image_size: int = 64) -> None:
        super().__init__()
        check_image_size("resfcn18", image_size)
        self.architecture = "resfcn18"
        self.image_size = image_size
        self.fixed_input_size = True
        self.prefers_channels_last = False

        in_features = 3 * image_size * image_size
        width = in_features // 8
        self.stem = nn.Sequential(
            nn.Linear(in_features, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
        )

        self.layer1 = self._make_stage(width, width)
        self.layer2 = self._make_stage(width, width // 2)
        self.layer3 = self._make_stage(width // 2, width // 4)
        self.layer4 = self._make_stage(width // 4, width // 8)

        self.fc = nn.Linear(width // 8, num_classes)

    @staticmethod
    def _make_stage(in_features: int, out_features: int) -> nn.Sequential:
        return nn.Sequential(
            ResidualLinearBlock(in_features, out_features),
            ResidualLinearBlock(out_features, out_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.training and x.shape[0] < 2:
            raise ValueError(
                "resfcn18 in training mode needs a batch of at least 2 images because BatchNorm1d estimates "
                f"statistics over the batch; found batch size {x.shape[0]}. Call model.eval() to predict single images."
            )

        x = torch.flatten(x, 1)
        x = self.stem(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.fc(x)

        return x


def resfcn18_widths(image_size: int) -> tuple[int, ...]:
    """Return the ResFCN-18 feature widths: flattened input, stem output and the output of stages 2 to 4."""
    in_features = 3 * image_size * image_size
    stem = in_features // 8
    return (in_features, stem, stem // 2, stem // 4, stem // 8)


def check_architecture(name: str) -> None:
    """Raise ValueError listing the valid names when ``name`` is not in the registry."""
    if name not in MODEL_NAMES:
        raise ValueError(f"Unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}.")


def check_image_size(name: str, image_size: int) -> None:
    """Raise ValueError with the reason and the fix when architecture ``name`` cannot take ``image_size`` pixels."""
    check_architecture(name)
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image_size must be an integer number of pixels; found {image_size!r}.")

    minimum = MIN_IMAGE_SIZE[name]
    if image_size < minimum:
        raise ValueError(f"{name} needs image_size >= {minimum} px; found {image_size}. Choose {minimum} or more.")

    if name != "resfcn18":
        return

    # The stem divides 3*S*S by 8 and three stages halve it again, so 3*S*S must be divisible by 64: S % 8 == 0.
    if image_size % 8 != 0:
        lower = image_size - image_size % 8
        raise ValueError(
            f"resfcn18 needs image_size to be a multiple of 8 so every layer width is a whole number; found "
            f"{image_size}. Use {lower} or {lower + 8}."
        )

    in_features, stem_width = resfcn18_widths(image_size)[:2]
    stem_parameters = in_features * stem_width
    if stem_parameters > MAX_STEM_PARAMETERS:
        largest = _largest_resfcn18_size()
        raise ValueError(
            f"resfcn18 at {image_size} px would need a stem of {in_features:,} x {stem_width:,} = "
            f"{stem_parameters:,} weights, over the limit of {MAX_STEM_PARAMETERS:,} (MAX_STEM_PARAMETERS). "
            f"Use image_size <= {largest}."
        )


def _largest_resfcn18_size() -> int:
    size = 8
    while True:
        in_features, stem_width = resfcn18_widths(size + 8)[:2]
        if in_features * stem_width > MAX_STEM_PARAMETERS:
            return size
        size += 8


def create_model(name: str, num_classes: int, image_size: int | None = None, pretrained: bool = False) -> nn.Module:
    """Build registry model ``name`` for ``num_classes`` classes at ``image_size`` px (default per architecture).

    ``pretrained=True`` is available for resnet18 only: it loads torchvision's ImageNet weights
    (ResNet18_Weights.IMAGENET1K_V1) into the backbone and keeps a freshly initialised classifier.
    """
    check_architecture(name)
    if image_size is None:
        image_size = DEFAULT_IMAGE_SIZE[name]
    check_image_size(name, image_size)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; found {num_classes!r}.")
    if pretrained and name != "resnet18":
        raise ValueError(f"No pretrained weights exist for {name}; only resnet18 can start from ImageNet weights.")

    if name == "custom_cnn":
        model = CustomCNN(num_classes, image_size)
    elif name == "resnet18":
        model = ResNet18(num_classes, image_size)
        if pretrained:
            load_imagenet_weights(model)
    else:
        model = ResFCN18(num_classes, image_size)

    logger.debug("Built %s for %d classes at %d px: %s parameters", name, num_classes, image_size,
                 f"{count_parameters(model):,}")
    return model


def imagenet_weights_path() -> Path:
    """Return where torchvision's weights API caches the ResNet-18 ImageNet weights (under torch.hub.get_dir())."""
    file_name = Path(urlparse(ResNet18_Weights.IMAGENET1K_V1.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def load_imagenet_weights(model: nn.Module) -> None:
    """Load torchvision's ImageNet ResNet-18 weights into every layer of ``model`` except the classifier ``fc``.

    The file is downloaded once into the torch hub cache (see :func:`imagenet_weights_path`) and read with
    ``weights_only=True``, so a tampered cache file cannot run code.
    """
    weights = ResNet18_Weights.IMAGENET1K_V1
    path = imagenet_weights_path()
    logger.warning(IMAGENET_OVERLAP_WARNING)

    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except OSError as error:
        # urllib's URLError (no network, DNS failure, HTTP error) is a subclass of OSError.
        raise PretrainedWeightsError(
            f"Could not download the ImageNet weights for resnet18 ({error}). Download {weights.url} on a machine "
            f"with internet access and save it as {path}, or train without pretrained weights."
        ) from error
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        raise PretrainedWeightsError(
            f"Could not read the cached ImageNet weights {path} ({error}). Delete the file so it downloads again, "
            f"or replace it with a fresh copy of {weights.url}."
        ) from error

    backbone = {key: value for key, value in state.items() if not key.startswith("fc.")}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    if unexpected or set(missing) != {"fc.weight", "fc.bias"}:
        raise PretrainedWeightsError(
            f"The weights in {path} do not match torchvision's ResNet-18: missing {sorted(missing)}, unexpected "
            f"{sorted(unexpected)}. Delete the file so it downloads again."
        )
    logger.info("Loaded ImageNet weights into the resnet18 backbone from %s", path)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the plain model inside a torch.compile or DistributedDataParallel wrapper (or ``model`` itself)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def wants_channels_last(model: nn.Module) -> bool:
    """Return True when ``model`` runs faster with inputs in torch.channels_last memory format (the CNNs)."""
    return bool(getattr(unwrap_model(model), "prefers_channels_last", False))


def count_parameters(model: nn.Module) -> int:
    """Count every parameter of ``model``, trainable or frozen, but not buffers such as batch-norm statistics."""
    return sum(parameter.numel() for parameter in unwrap_model(model).parameters())


def flops_per_image(model: nn.Module, image_size: int) -> int:
    """Count the forward-pass FLOPs for one ``image_size`` px image with torch.utils.flop_counter.

    The counter follows PyTorch's convention of 2 FLOPs per multiply-accumulate in convolutions and matrix
    products. It leaves out element-wise work (batch norm, ReLU, pooling, residual additions), which is small.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = unwrap_model(model)
    parameter = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=parameter.device, dtype=parameter.dtype)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)

    return int(counter.get_total_flops())
