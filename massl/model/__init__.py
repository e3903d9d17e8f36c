"""The network and what belongs to it: `network` (MASSLNet and `build_model`, plain torch.nn),
`losses` (SPEC section 2), `cpu_conv` (the oneDNN 3D convolutions `training.cpu_conv3d` puts
in) and `files` (checksummed torch files, a run's model.pt)."""
