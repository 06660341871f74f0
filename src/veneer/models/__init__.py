"""What is attacked: reference architectures, Softplus surrogates, training and bundled/user models."""

from veneer.models.activations import softplus_activations, with_softplus
from veneer.models.architectures import (ViT, ResNet, cifar_resnet, cifar_vgg, digits_mlp, make_activation, mnist_cnn,
                                        mnist_resnet, mnist_vit, tabular_mlp)
from veneer.models.blackbox import BlackBox, has_gradients, load_blackbox, onnx_model, skops_model
from veneer.models.capture import capture
from veneer.models.registry import RECIPES, cache_dir, load, pretrained, pretrained_metadata, resolve_model, train_bundled
from veneer.models.training import accuracy, load_state, predict, save, train

__all__ = ["mnist_cnn", "cifar_vgg", "tabular_mlp", "digits_mlp", "make_activation", "with_softplus",
           "softplus_activations", "mnist_resnet", "cifar_resnet", "ResNet", "mnist_vit", "ViT", "train", "train_bundled", "pretrained",
           "pretrained_metadata", "load", "load_state", "save", "predict", "accuracy", "resolve_model", "cache_dir",
           "RECIPES", "capture", "BlackBox", "has_gradients", "load_blackbox", "onnx_model", "skops_model"]
