print('module b, also unique')
