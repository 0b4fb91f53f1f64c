/* loader: not written yet */
