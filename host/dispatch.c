/* dispatch: not written yet */
