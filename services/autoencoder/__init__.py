"""The autoencoder method: a convolutional autoencoder trained on the catalogue itself.

``model`` holds the network and the embedder that serves searches, ``training`` the
unsupervised training (denoising reconstruction plus a contrastive term on the latent).
``tools/autoencoder_research.py``, outside the service, is the script that measured the
design on the Grocery Store data set.
"""
