"""What the model sees: pictures from files, bytes and cameras, sized to an image-token budget."""
